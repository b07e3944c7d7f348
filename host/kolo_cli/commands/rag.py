"""`kolo rag build | add | query`: index documents, retrieve passages, answer from them.

The work (embedding model, FAISS) runs in the trainer (``python -m kolo_trainer rag-build|rag-add|rag-query``)
through the one argv builder and the transports, like `kolo export`; the commands are built from the option models
(``kolo_trainer.rag.options``) by ``optionflags.make_command``. The host stays light: it checks names and the index
folder through ``runfolder``/``rag.store`` before any trainer process, and answers through Ollama with
``ollama_client.OllamaClient.chat`` using the prompt the trainer built from its retrieval (a ``result`` event).
"""

from __future__ import annotations

import inspect
import json
import sys
from typing import Any, Optional

import typer

from kolo_trainer.errors import KoloError, OptionsError

from ..optionflags import LazyTyperGroup
from ..state import STATE

_MODELS = "kolo_trainer.rag.options:"


class _RagGroup(LazyTyperGroup):
    """`kolo rag`'s subcommands are built only when one runs (their option models import pydantic)."""

    @property
    def lazy(self) -> dict:  # type: ignore[override]
        return getattr(rag_app, "_kolo_lazy", {})


rag_app = typer.Typer(cls=_RagGroup, no_args_is_help=True, add_completion=False,
                      help="Retrieval-augmented generation: index documents (offline embeddings + FAISS), retrieve "
                           "passages, answer through Ollama or a kolo run's GGUF.")

BUILD_HELP = ("Index documents under the data root into outputs/NAME/rag/ (rag_config.json, vector_index.faiss, "
              "documents.json, embeddings_metadata.json, chunk_sources.json).\n\n"
              "Example: kolo rag build handbook --source data/handbook --chunk-tokens 256")
ADD_HELP = ("Add documents to an index: new chunks are embedded and appended; old ones are kept as they are, and a "
            "chunk already indexed is skipped.\n\nExample: kolo rag add handbook --source data/new-policy.md")
QUERY_HELP = ("Retrieve the best passages across all documents and answer from them, through Ollama "
              "(--ollama-model) or a kolo run's GGUF (--run); --retrieve-only --json prints passages, sources and "
              "scores.\n\nExample: kolo rag query handbook \"How many days of leave?\" --ollama-model llama3.2")


def validate(model_name: str, flags: dict[str, Any], fixed: dict[str, Any],
             more: tuple[str, ...] = ()) -> dict[str, Any]:
    """The explicit option values of ``model_name`` (RagBuildOptions, RagAddOptions, RagQueryOptions), or one
    OptionsError listing every problem at once: the field checks, the option model's own ``problems()`` (checks of
    two fields together) and ``more`` (the caller's). Used by `kolo rag` and by ``kolo serve`` (jobs, rag routes)."""
    from importlib import import_module

    from kolo_trainer import spec

    model = getattr(import_module(_MODELS.rstrip(":")), model_name)
    problems = [f"--{k.replace('_', '-')} and the argument disagree; give one" for k in fixed
                if k in flags and flags[k] != fixed[k]] + list(more)
    given = {**flags, **fixed}
    explicit: dict[str, Any] = {}
    try:
        opts, explicit = spec.merge(model, {}, given)
        problems += opts.problems() if hasattr(opts, "problems") else []
    except OptionsError as e:
        problems += e.problems + _cross_problems(model, given)
    if problems:
        raise OptionsError(problems, hint=f"see `kolo rag {model_name[3:-7].lower()} --help`")
    return explicit


def _cross_problems(model: type, given: dict[str, Any]) -> list[str]:
    """``problems()`` over the fields that passed their own checks, so a field error does not hide a two-field
    one (each field is validated alone into a defaults-only model; pydantic's own assignment validation)."""
    from pydantic import ValidationError

    from kolo_trainer.spec import flag_name

    if not hasattr(model, "problems"):
        return []
    probe, bad = model.model_construct(), []
    for name, value in given.items():
        if value is None or name not in model.model_fields:
            continue
        try:
            model.__pydantic_validator__.validate_assignment(probe, name, value)
        except ValidationError:
            bad.append(flag_name(name))  # reported by the field check; a check against its default would mislead
    return [p for p in probe.problems() if not any(b in p for b in bad)]


def _run_trainer(verb: str, model_name: str, explicit: dict[str, Any], dry_run: bool, renderer: Any = None) -> None:
    from importlib import import_module

    from ..render import make_renderer
    from ..transport import make_transport, trainer_argv

    model = getattr(import_module(_MODELS.rstrip(":")), model_name)
    transport = make_transport(STATE.runtime, STATE.container, STATE.root(), debug=STATE.debug)
    argv = trainer_argv(verb, model, explicit, transport.data_root)
    if dry_run:
        print(transport.dry_run_line(argv))
        return
    rc = transport.run(argv, renderer if renderer is not None else make_renderer())
    if rc != 0:
        raise typer.Exit(rc)


def _index(name: str) -> None:
    """The index exists on the host's data root (the container sees the same folder): a typo costs no exec."""
    from kolo_trainer.rag import store

    store.require(STATE.data().check().run(name, "NAME"))


def build(flags: dict[str, Any], index_name: str, dry_run: bool) -> None:
    name = index_name
    explicit = validate("RagBuildOptions", flags, {"name": name})
    _run_trainer("rag-build", "RagBuildOptions", explicit, dry_run)


def add(flags: dict[str, Any], index_name: str, dry_run: bool) -> None:
    name = index_name
    explicit = validate("RagAddOptions", flags, {"name": name})
    if not dry_run:
        _index(name)
    _run_trainer("rag-add", "RagAddOptions", explicit, dry_run)


class _Capture:
    """A renderer that keeps rag-query's ``result`` event; with ``quiet`` the trainer's stdout (the passages as
    text) is not shown either, so ``--json`` prints one JSON document and nothing else."""

    def __init__(self, quiet: bool):
        from ..render import make_renderer

        self.inner, self.quiet, self.result = make_renderer(), quiet, None

    def event(self, ev: dict[str, Any]) -> None:
        if ev.get("event") == "result" and ev.get("stage") == "rag-query":
            self.result = ev
        elif not self.quiet:
            self.inner.event(ev)

    def log(self, line: str, stream: str = "stdout") -> None:
        if stream == "stderr" or not self.quiet:
            self.inner.log(line, stream)

    def close(self) -> None:
        self.inner.close()


def _query_problems(explicit: dict, ollama_model: Optional[str], as_json: bool) -> list[str]:
    """How to answer: exactly one way (``explicit``: the flags as given; presence is what counts here)."""
    problems = []
    if ollama_model is not None and explicit.get("run") is not None:
        problems.append("--ollama-model and --run both say how to answer; give one")
    if ollama_model is None and explicit.get("run") is None and not explicit.get("retrieve_only"):
        problems.append("say how to answer: --ollama-model MODEL (Ollama), --run RUN (a kolo run's GGUF), "
                        "or --retrieve-only")
    if as_json and not explicit.get("retrieve_only"):
        problems.append("--json prints the retrieved passages: use it with --retrieve-only")
    return problems


def query(flags: dict[str, Any], index_name: str, question_text: str, ollama_model: Optional[str],
          ollama: Optional[str], as_json: bool, dry_run: bool) -> None:
    name, question = index_name, question_text
    problems = _query_problems(flags, ollama_model, as_json)
    if ollama_model is not None:
        from ..ollama_client import check_model_name

        try:
            check_model_name(ollama_model)
        except KoloError as e:
            problems.append(f"--ollama-model: {e.message}")
    explicit = validate("RagQueryOptions", flags, {"name": name, "question": question}, tuple(problems))
    if not dry_run:
        _index(name)
        if explicit.get("run") is not None and not explicit.get("retrieve_only"):
            from kolo_trainer.export.chat import exported

            exported(STATE.data().run(explicit["run"], "--run"), None)
    if ollama_model is None and not as_json:
        # The trainer prints the passages (--retrieve-only) or streams the GGUF's answer (--run); its result event
        # (the whole prompt) is kept, not shown.
        shown = _Capture(quiet=False)
        _run_trainer("rag-query", "RagQueryOptions", explicit, dry_run, shown)
        if shown.result is not None and not explicit.get("retrieve_only"):
            _print_sources(shown.result)
        return
    capture = _Capture(quiet=True)
    _run_trainer("rag-query", "RagQueryOptions", {**explicit, "retrieve_only": True}, dry_run, capture)
    if dry_run:
        return
    if capture.result is None:
        raise KoloError("the trainer's rag-query reported no retrieval", hint="run again with --debug")
    if as_json:
        print(json.dumps({k: capture.result.get(k) for k in ("question", "documents", "sources", "scores")},
                         ensure_ascii=False, indent=2))
        return
    _answer_with_ollama(ollama_model, ollama, capture.result, ollama_options(explicit))


def ollama_options(explicit: dict[str, Any]) -> dict[str, Any]:
    """--temperature and --max-tokens, when given, as Ollama's chat options (its own defaults otherwise)."""
    names = {"temperature": "temperature", "max_tokens": "num_predict"}
    return {names[k]: explicit[k] for k in names if explicit.get(k) is not None}


def _answer_with_ollama(model: str, url: Optional[str], result: dict[str, Any], options: dict[str, Any]) -> None:
    from ..ollama_client import OllamaClient

    with OllamaClient(url) as client:
        reply = client.chat(model, str(result["prompt"]), options or None)
    print(str((reply.get("message") or {}).get("content", "")).strip())
    _print_sources(result)


def _print_sources(result: dict[str, Any]) -> None:
    """After an answer: where its passages came from (stderr, so stdout is the answer alone)."""
    from kolo_trainer.rag.retrieve import where

    for n, src in enumerate(result.get("sources") or [], 1):
        print(f"  [{n}] {where(src)}", file=sys.stderr)


def _param(name: str, default: Any, annotation: Any = str) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def _dry_run() -> inspect.Parameter:
    return _param("dry_run", typer.Option(False, "--dry-run", help="Print the exact command (one shell-quoted line) "
                                          "and run nothing.", rich_help_panel="Run"), bool)


def _name_arg() -> inspect.Parameter:
    return _param("index_name", typer.Argument(..., metavar="NAME", help="The index (outputs/NAME/rag/)."))


def register(app: typer.Typer) -> None:
    from ..optionflags import make_command
    from .ollama import OLLAMA_OPT_HELP

    make_command(rag_app, "build", _MODELS + "RagBuildOptions", build, BUILD_HELP, [_name_arg(), _dry_run()])
    make_command(rag_app, "add", _MODELS + "RagAddOptions", add, ADD_HELP, [_name_arg(), _dry_run()])
    make_command(rag_app, "query", _MODELS + "RagQueryOptions", query, QUERY_HELP, [
        _name_arg(),
        _param("question_text", typer.Argument(..., metavar="QUESTION", help="The question.")),
        _param("ollama_model", typer.Option(None, "--ollama-model", metavar="MODEL", help="Answer with this Ollama "
                                            "model (POST /api/chat)."), Optional[str]),
        _param("ollama", typer.Option(None, "--ollama", help=OLLAMA_OPT_HELP), Optional[str]),
        _param("as_json", typer.Option(False, "--json", help="With --retrieve-only: one JSON document "
                                       "{question, documents, sources, scores}."), bool),
        _dry_run()])
    app.add_typer(rag_app, name="rag", rich_help_panel="Data")
