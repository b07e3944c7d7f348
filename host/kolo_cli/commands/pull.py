"""`kolo pull RUN [--quantization Q]`: bring a run's GGUFs, Modelfiles and kolo.json from the engine's data root.

With a remote engine the run lives in a volume on that machine; `kolo pull` copies what Ollama, LM Studio and
`kolo chat` need into this machine's data root (``outputs/RUN/``), so every local verb then works on it. The
listing and the hashes come from the container (``remote_data.run_files``); each file is fetched through the
Docker API under a temporary name, checked (size + sha256) and renamed into place; kolo.json comes last, so the
folder is a run here only once it is complete. A second pull skips the files that already match (an interrupted
pull resumes) and refuses to replace a different local file without ``--overwrite``.
"""

from __future__ import annotations

import sys
from typing import Any, List, Optional

import typer

from kolo_trainer.errors import NameError_, OptionsError

from ..state import STATE


def _quantizations(given: list[str]) -> list[str]:
    from kolo_trainer.options import QUANTIZATIONS

    wanted = [q.upper() for q in given]
    bad = [q for q in given if q.upper() not in QUANTIZATIONS]
    if bad:
        raise OptionsError([f"--quantization {q!r} is not one of {', '.join(QUANTIZATIONS)}" for q in bad])
    return list(dict.fromkeys(wanted))


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def pull(
    run_name: str = typer.Argument(..., metavar="RUN", help="Run folder under outputs/ in the engine's data root."),
    quantization: Optional[List[str]] = typer.Option(None, "--quantization", "-q", metavar="Q",
                                                     help="Which GGUF to bring (repeatable; default: every "
                                                     "exported one)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace local files that differ from the engine's."),
) -> None:
    """Bring a run's GGUFs, Modelfiles and kolo.json from the engine's data root into this machine's.

    Atomic and resumable: a file appears under its final name only when complete and checked (sha256).
    A second pull skips what already matches. Then `kolo ollama-install`, `kolo chat` and `kolo list` work here.

    Example: kolo --docker-host ssh://me@gpu-box pull my-run --quantization Q4_K_M
    """
    from kolo_trainer import names

    from .. import docker_ctl, remote_data

    quants = _quantizations(quantization or [])
    try:
        names.check_run_name(run_name)
    except ValueError as e:
        raise NameError_(f"RUN {run_name!r}: {e}") from None
    if STATE.runtime != "docker":
        raise OptionsError(["kolo pull copies from the kolo container's data root; --runtime local has none"])
    container = docker_ctl.require_running(STATE.container)
    files = remote_data.run_files(container, run_name, quants)
    root = STATE.data()
    root.path.mkdir(parents=True, exist_ok=True)
    run = root.check(writable=True).run(run_name, "RUN")
    todo, here = remote_data.bring(container, run, files, overwrite,
                                   lambda rel, size: print(f"pulled {run.label}/{rel} ({_size(size)})", flush=True))
    total = sum(size for _, size, _ in todo)
    print(f"{run.label}: {len(todo)} file(s) pulled ({_size(total)}), {len(here)} already here")
    if todo or here:
        q = next((rel.rsplit("-", 1)[-1][:-5] for rel, _, _ in files if rel.endswith(".gguf")), "Q4_K_M")
        print(f"next: kolo ollama-install NAME --output-dir {run_name} --quantization {q}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.command("pull", rich_help_panel="Export")(pull)
