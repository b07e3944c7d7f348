"""`kolo rag build | add | query` on the host: flags from the option models, argv from the one builder, every
problem reported before any trainer process. Real `kolo` subprocesses; no model (dry runs and refusals never load
one)."""

from __future__ import annotations

import shlex
import subprocess

from kolo_trainer import spec
from kolo_trainer.rag.options import RagBuildOptions, RagQueryOptions


def _argv(r: subprocess.CompletedProcess) -> list[str]:
    assert r.returncode == 0, r.stderr
    return shlex.split(r.stdout.strip())


def test_rag_verbs_are_listed_and_their_flags_are_the_option_models(kolo):
    r = kolo("rag", "--help")
    assert r.returncode == 0 and all(v in r.stdout for v in ("build", "add", "query"))
    for verb, model in (("build", RagBuildOptions), ("query", RagQueryOptions)):
        h = kolo("rag", verb, "--help")
        assert h.returncode == 0
        for info in spec.describe(model):
            assert info.flag in h.stdout, (verb, info.flag)
    assert "--ollama-model" in kolo("rag", "query", "--help").stdout


def test_build_dry_run_argv_parses_back_in_the_trainer(kolo, data_root):
    argv = _argv(kolo("--runtime", "local", "rag", "build", "hand book", "--source", "data/a", "--source",
                      "--odd.md", "--chunk-tokens", "128", "--dry-run"))
    assert argv[1:4] == ["-m", "kolo_trainer", "rag-build"]
    assert argv[-2:] == ["--data-root", str(data_root)]
    opts, _ = spec.parse_argv(RagBuildOptions, argv[4:-2])
    assert (opts.name, opts.source, opts.chunk_tokens) == ("hand book", ["data/a", "--odd.md"], 128)


def test_query_dry_run_argv(kolo):
    argv = _argv(kolo("--runtime", "local", "rag", "query", "idx", "--top-k", "5", "--run", "my-run", "--dry-run",
                      "--", "--help"))
    opts, explicit = spec.parse_argv(RagQueryOptions, argv[4:-2])
    assert argv[3] == "rag-query" and opts.question == "--help" and opts.top_k == 5 and opts.run == "my-run"
    # --ollama-model: the trainer only retrieves; the host asks Ollama
    argv = _argv(kolo("--runtime", "local", "rag", "query", "idx", "q", "--ollama-model", "llama3.2", "--dry-run"))
    assert "--retrieve-only" in argv


def test_every_problem_at_once_before_any_trainer(kolo):
    r = kolo("--runtime", "local", "rag", "query", "a/b", "q", "--top-k", "0", "--run", "r", "--ollama-model", "m",
             "--json")
    assert r.returncode == 2
    for needle in ("--name", "--top-k", "--ollama-model and --run", "--json prints the retrieved passages"):
        assert needle in r.stderr, needle
    r = kolo("--runtime", "local", "rag", "build", "x", "--source", "d", "--chunk-tokens", "16", "--overlap", "20")
    assert r.returncode == 2 and "--overlap (20) must be smaller than --chunk-tokens (16)" in r.stderr


def test_query_of_a_missing_index_names_the_build_command(kolo, data_root):
    (data_root / "outputs" / "run1").mkdir()
    for args in (("rag", "query", "run1", "q", "--retrieve-only"), ("rag", "add", "run1", "--source", "data")):
        r = kolo("--runtime", "local", *args)
        assert r.returncode == 2 and "no RAG index 'run1'" in r.stderr and "kolo rag build run1" in r.stderr
    r = kolo("--runtime", "local", "rag", "query", "run1", "q", "--run", "nope")
    assert r.returncode == 2 and "no RAG index" in r.stderr
