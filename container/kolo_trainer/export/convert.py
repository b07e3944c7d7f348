"""Stage 2: HF model folder -> 16-bit GGUF with llama.cpp's own converter, run as a subprocess.

A subprocess (argv list, never a shell) because the converter is a script of the llama.cpp version that matches
llama-cpp-python, with its own ``gguf`` package that must win over any other on ``sys.path``
(``PYTHONPATH=<converter>/gguf-py``); and because it can then be killed without leaving our process in a state.
Its tqdm "Writing" bar (bytes written) becomes kolo progress events.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from .. import progress
from ..errors import ExportError
from . import converter

_WRITING = re.compile(r"Writing:\s+(\d+)%")


def _env(conv: Path) -> dict:
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)
    env["PYTHONPATH"] = os.pathsep.join([str(conv / "gguf-py")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                                                                    else []))
    env["PYTHONUNBUFFERED"] = "1"
    # The converter must never reach the network (it would for a hub id); kolo's export is offline.
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def run_script(argv: list[str], stage: str, what: str) -> None:
    """Run a converter script; stream its "Writing" percentage as progress; raise ExportError with its last lines."""
    tail: deque[str] = deque(maxlen=25)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=_env(Path(argv[1]).parent))
    assert proc.stdout is not None
    buf = b""
    last_pct, last_t = -1, 0.0
    try:
        while True:
            chunk = proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") else proc.stdout.read(4096)
            if not chunk:
                break
            buf += chunk
            # tqdm redraws with \r; log lines end with \n: both end a "line" here.
            *lines, buf = re.split(rb"[\r\n]", buf)
            for raw in lines:
                line = raw.decode("utf-8", "replace").strip()
                if not line:
                    continue
                m = _WRITING.search(line)
                if m:
                    pct = int(m.group(1))
                    now = time.monotonic()
                    if pct != last_pct and (pct == 100 or now - last_t > 0.5):
                        progress.emit("progress", stage=stage, step=pct, total=100)
                        last_pct, last_t = pct, now
                    continue
                tail.append(line)
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if rc != 0:
        important = [ln for ln in tail if not ln.startswith("INFO:")] or list(tail)
        raise ExportError(f"the llama.cpp converter failed on {what} (exit {rc}):\n  "
                          + "\n  ".join(important[-12:]),
                          "run again with --debug for the full log; if the architecture is not supported by this "
                          "llama.cpp, the converter says so above")


def to_gguf(model_dir: Path, out_tmp: Path, outtype: str = "f16", stage: str = "convert") -> None:
    """Convert the HF model in ``model_dir`` into ``out_tmp`` (a temporary name; the caller renames it).

    Added special tokens are first declared where the converter reads them (``special_tokens``), through a
    temporary view of the folder, so they become control tokens in the GGUF.
    """
    from . import special_tokens

    conv = converter.ensure()
    with special_tokens.converter_view(model_dir, Path(out_tmp).parent) as (src, report):
        if report["declared"]:
            progress.emit("metric", stage=stage, name="declared_special_tokens", value=len(report["declared"]))
        if report.get("add_space_prefix") is False:
            progress.emit("warning", message="the GGUF's add_space_prefix is turned off to match the HF tokenizer "
                          "(no SentencePiece space after a special token); a prompt whose text starts with plain "
                          "text still tokenises differently (verification's token parity shows it)")
        if report["out_of_range"]:
            progress.emit("warning", message="the model's vocab_size cannot hold the added tokens "
                          f"{', '.join(report['out_of_range'])}: llama.cpp's converter drops them")
        argv = [sys.executable, str(conv / "convert_hf_to_gguf.py"), str(src), "--outfile", str(out_tmp),
                "--outtype", outtype]
        run_script(argv, stage, str(model_dir))


def lora_to_gguf(adapter_dir: Path, base_dir: Path, out_tmp: Path, outtype: str = "f16",
                 stage: str = "convert") -> None:
    """Convert a PEFT LoRA adapter to a GGUF adapter (``convert_lora_to_gguf.py`` from the same sdist)."""
    conv = converter.ensure()
    script = conv / "convert_lora_to_gguf.py"
    if not script.is_file():
        raise ExportError(f"this llama-cpp-python's sdist has no convert_lora_to_gguf.py ({conv})",
                          "export the merged model instead (without --adapter-only)")
    argv = [sys.executable, str(script), str(adapter_dir), "--base", str(base_dir), "--outfile", str(out_tmp),
            "--outtype", outtype]
    run_script(argv, stage, str(adapter_dir))
