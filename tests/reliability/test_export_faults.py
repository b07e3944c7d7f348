"""Issue 10, export and chat: refusals that must not touch a finished export, failures that must not leave an
earlier export's files offered as current, and the run lookups of `kolo export` / `kolo chat`, through the real
`kolo` console script (local runtime).

Each refusal case: the documented exit code, one ``error:`` line matching the case's pattern, no traceback, and
nothing changed inside the data root, nor outside it (the folder a link points to is hashed too). The cases need no
model: a refusal happens before any model is loaded, and the runs here only look exported. The one case that needs
a real export (an export that fails after an earlier one finished) builds a tiny model and really converts it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable

import pytest

from rel_helpers import assert_clean_refusal, tree_digest

LOCAL = {"KOLO_RUNTIME": "local"}


def _exported(root: Path, name: str = "done", method: str = "lora", base_dir: bool = True) -> Path:
    """A finished run whose manifest records a finished export with its files on disk (a Q4_K_M GGUF and its
    Modelfile). The GGUF is not a real one: every case here is refused before anything would load it."""
    run = root / "outputs" / name
    (run / "adapter").mkdir(parents=True, exist_ok=True)
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 8, "modules_to_save": None}))
    if method == "full":
        (run / "model").mkdir(exist_ok=True)
        (run / "model" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    if base_dir:
        (root / "models" / "base").mkdir(parents=True, exist_ok=True)
        (root / "models" / "base" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (run / "gguf").mkdir(exist_ok=True)
    (run / "gguf" / f"{name}-Q4_K_M.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    (run / "gguf" / "Modelfile.Q4_K_M").write_text(f"FROM ./{name}-Q4_K_M.gguf\n")
    (run / "kolo.json").write_text(json.dumps({
        "status": "finished", "method": method, "options": {"output_dir": name, "method": method,
                                                            "base_model": "models/base"},
        "base_model": {"id": "models/base", "local_path": "models/base"},
        "export": {"status": "finished", "quantizations": {"Q4_K_M": {"file": f"gguf/{name}-Q4_K_M.gguf"}},
                   "modelfiles": {"Q4_K_M": "gguf/Modelfile.Q4_K_M"},
                   "verification": {"status": "passed"}}}, indent=2))
    return run


def full_run(root: Path) -> None:
    _exported(root, method="full")


def base_gone(root: Path) -> None:
    _exported(root)
    shutil.rmtree(root / "models" / "base")


def lora_run(root: Path) -> None:
    _exported(root)


def link_run(root: Path) -> None:
    victim = root.parent / "victim"
    victim.mkdir()
    (victim / "kolo.json").write_text(json.dumps({"status": "finished"}))
    (root / "outputs" / "victim").symlink_to(victim, target_is_directory=True)


def user_folder(root: Path) -> None:
    (root / "outputs" / "mine").mkdir()
    (root / "outputs" / "mine" / "notes.txt").write_text("my own notes")


def damaged(root: Path) -> None:
    _exported(root)
    (root / "outputs" / "done" / "kolo.json").write_text('{"status": "fini')


def unfinished(root: Path) -> None:
    run = root / "outputs" / "half"
    run.mkdir()
    (run / "kolo.json").write_text(json.dumps({"status": "interrupted", "method": "lora"}))


def gguf_dir_removed(root: Path) -> None:
    shutil.rmtree(_exported(root) / "gguf")


def gguf_file_removed(root: Path) -> None:
    (_exported(root) / "gguf" / "done-Q4_K_M.gguf").unlink()


def never_exported(root: Path) -> None:
    run = _exported(root)
    shutil.rmtree(run / "gguf")
    data = json.loads((run / "kolo.json").read_text())
    del data["export"]
    (run / "kolo.json").write_text(json.dumps(data))


def modelfile_escapes(root: Path) -> None:
    run = _exported(root)
    (root.parent / "victim").mkdir()
    (root.parent / "victim" / "x.gguf").write_bytes(b"GGUF")
    (run / "gguf" / "Modelfile.Q4_K_M").write_text("FROM ../../../../victim/x.gguf\n")


#: (id, argv, setup, exit code, pattern one output line must match)
CASES: list[tuple[str, list[str], Callable[[Path], None] | None, int, str]] = [
    # (a) refused export options never touch the finished export (checked in the trainer, before "running")
    ("adapter-only-full-finetune", ["export", "done", "--adapter-only"], full_run, 2,
     r"--adapter-only: run was fully fine-tuned"),
    ("adapter-only-base-gone", ["export", "done", "--adapter-only"], base_gone, 5,
     r"the base model folder models/base this run was trained on is gone"),
    ("export-base-gone", ["export", "done"], base_gone, 5, r"the base model folder models/base .* is gone"),
    ("adapter-only-modules-to-save", ["export", "done", "--adapter-only"],
     lambda r: (lora_run(r), (r / "outputs/done/adapter/adapter_config.json").write_text(
         json.dumps({"modules_to_save": ["lm_head"]}))), 2, r"modules_to_save"),
    # (c) the run lookup: one message each, from runfolder, on the host before any trainer process
    ("export-missing-run", ["export", "ghost"], None, 2, r"no run 'ghost' under"),
    ("export-user-folder", ["export", "mine"], user_folder, 2, r"outputs/mine is not a kolo run"),
    ("export-linked-run", ["export", "victim"], link_run, 2, r"outputs/victim is a symbolic link"),
    ("export-damaged-manifest", ["export", "done"], damaged, 1, r"outputs/done/kolo\.json is damaged"),
    ("export-unfinished", ["export", "half"], unfinished, 5, r"cannot export outputs/half: its training did not "
                                                                 r"finish \(status: interrupted\)"),
    ("export-bad-option-and-missing-run", ["export", "ghost", "--quantization", "Q9"], None, 2,
     r"no run 'ghost'"),
    # chat: the files it needs, named, with `kolo export RUN` as the fix
    ("chat-gguf-dir-removed", ["chat", "done", "--prompt", "hi"], gguf_dir_removed, 5,
     r"the Modelfile outputs/done/gguf/Modelfile\.Q4_K_M is missing"),
    ("chat-gguf-removed", ["chat", "done", "--prompt", "hi"], gguf_file_removed, 5,
     r"the GGUF that gguf/Modelfile\.Q4_K_M names \(FROM\) outputs/done/gguf/done-Q4_K_M\.gguf is missing"),
    ("chat-never-exported", ["chat", "done"], never_exported, 5, r"outputs/done: it has not been exported yet"),
    ("chat-quant-not-exported", ["chat", "done", "--quantization", "q8_0"], lora_run, 2,
     r"Q8_0 was not exported for outputs/done \(exported: Q4_K_M\)"),
    ("chat-missing-run", ["chat", "ghost", "--prompt", "hi"], None, 2, r"no run 'ghost' under"),
    ("chat-linked-run", ["chat", "victim"], link_run, 2, r"outputs/victim is a symbolic link"),
    ("chat-damaged-manifest", ["chat", "done"], damaged, 1, r"outputs/done/kolo\.json is damaged"),
    ("chat-modelfile-escapes", ["chat", "done", "--prompt", "hi"], modelfile_escapes, 5, r"outside the run folder"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_refusal(case, kolo, data_root: Path) -> None:
    _, argv, setup, code, pattern = case
    if setup is not None:
        setup(data_root)
    outside = data_root.parent / "victim"
    before = (tree_digest(data_root), tree_digest(outside) if outside.exists() else None)
    r = kolo(*argv, env=LOCAL, timeout=120)
    assert_clean_refusal(r, code, pattern)
    if argv[0] == "chat" and code == 5:
        assert re.search(rf"hint: run `kolo export {argv[1]}", r.stderr), r.stderr
    after = (tree_digest(data_root), tree_digest(outside) if outside.exists() else None)
    assert after == before, "something changed in or outside the data root"


def test_trainer_refuses_before_running_too(data_root: Path) -> None:
    """The host checks first, but the trainer can be started without it (a job server, a shell in the container):
    it refuses the same way, and the finished export it would have replaced keeps its record."""
    import subprocess
    import sys

    full_run(data_root)
    before = tree_digest(data_root)
    r = subprocess.run([sys.executable, "-m", "kolo_trainer", "export", "--output-dir=done", "--adapter-only",
                        "--data-root", str(data_root)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--adapter-only: run was fully fine-tuned" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert tree_digest(data_root) == before
    assert json.loads((data_root / "outputs" / "done" / "kolo.json").read_text())["export"]["status"] == "finished"


def test_option_values_stay_values(kolo, data_root: Path) -> None:
    """`--prompt=--help` is a prompt, `--system=--help` a SYSTEM line: glued into the trainer argv, never options."""
    r = kolo("--runtime", "local", "chat", "done", "--prompt=--help", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "'--prompt=--help'" in r.stdout or "--prompt=--help" in r.stdout.split()
    lora_run(data_root)
    r = kolo("chat", "done", "--prompt", "--help", env=LOCAL)  # reaches the trainer, which loads the fake GGUF
    assert "usage:" not in (r.stdout + r.stderr).lower() and "Show this message" not in r.stdout


# ---------------------------------------------------------------------------------------------- a real export


def test_failed_export_does_not_offer_the_previous_files(kolo, data_root: Path) -> None:
    """A finished export, then one that fails (the model changed into something the converter refuses): the
    manifest lists no GGUF or Modelfile as current, and `kolo chat` says the last export did not finish."""
    pytest.importorskip("llama_cpp", reason="export needs llama-cpp-python (scripts/install.sh)")
    pytest.importorskip("torch", reason="the tiny model needs torch (scripts/install.sh)")
    from kolo_trainer import manifest, tiny

    run = data_root / "outputs" / "small"
    tiny.build(run / "model", hidden_size=64, num_layers=1)
    manifest.update(run, status="finished", method="full", options={"max_seq_length": 128, "method": "full"})
    r = kolo("export", "small", "--quantization", "Q8_0", "--no-verify", env=LOCAL, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    first = json.loads((run / "kolo.json").read_text())["export"]
    assert first["status"] == "finished" and set(first["modelfiles"]) == {"F16", "Q8_0"}
    weights = next((run / "model").glob("*.safetensors"))
    weights.write_bytes(b"this is not a safetensors file")  # a new training's output, damaged
    r = kolo("export", "small", "--quantization", "Q8_0", "--no-verify", env=LOCAL, timeout=600)
    assert r.returncode == 5 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "the llama.cpp converter failed" in r.stderr
    second = json.loads((run / "kolo.json").read_text())["export"]
    assert second["status"] == "failed"
    assert second["quantizations"] == second["modelfiles"] == second["verification"] == second["template"] == {}
    assert "convert:F16" in second["stages"] and second["stages"]["convert:F16"] == first["stages"]["convert:F16"]
    r = kolo("chat", "small", "--prompt", "hi", env=LOCAL)
    assert_clean_refusal(r, 5, r"cannot chat with outputs/small: its last export did not finish \(status: failed\)")
