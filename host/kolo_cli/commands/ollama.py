"""The last mile: ollama-install, ollama-uninstall, list, delete, lmstudio-install.

Everything here runs on the host against the host data root (``--data-root`` / KOLO_DATA, bind-mounted into the
container at /var/kolo_data), so these verbs need no running kolo container. Ollama is reached over its REST API
(kolo_cli.ollama_client); LM Studio is a folder layout on disk.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import typer

from kolo_trainer.errors import KoloError, NameError_, OutputExistsError

from ..state import STATE

OLLAMA_OPT_HELP = "Ollama server URL (default: OLLAMA_HOST or http://127.0.0.1:11434)."


def _stderr():
    from ..console import err

    return err()


def _stdout():
    from ..console import out

    return out()


def _run(output_dir: str, what: str = "run", data_root: Optional[Path] = None) -> Any:
    """The run ``outputs/<output_dir>`` of the data root (``kolo_trainer.runfolder``: name, link and kind checks);
    ``data_root`` for a caller that serves one of its own (the Training Manager), else the CLI's."""
    from kolo_trainer.runfolder import DataRoot

    return (STATE.data() if data_root is None else DataRoot(data_root)).run(output_dir, what)


# ------------------------------------------------------------------------------------------- ollama-install
@dataclass
class OllamaInstalled:
    """What an Ollama install did: the model, the GGUF it came from, where, the smoke reply and the steps taken."""

    name: str
    output_dir: str
    quantization: str
    url: str
    reply: str
    log: list[str] = field(default_factory=list)


def install_ollama(name: str, output_dir: str, quantization: str = "Q4_K_M", ollama: Optional[str] = None,
                   smoke_max_tokens: int = 256, data_root: Optional[Path] = None,
                   console: Any = None) -> OllamaInstalled:
    """Upload the run's GGUF (and adapters) to Ollama, create the model from its Modelfile, record the install in
    kolo.json and smoke-test it. Each step is noted in the result's ``log`` (and on ``console`` when given, with
    progress bars on a terminal). `kolo ollama-install` and the Training Manager's deploy both call this."""
    from kolo_trainer import manifest
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    from .. import ollama_client as oc

    log: list[str] = []

    def note(line: str) -> None:
        log.append(line)
        if console is not None:
            console.print(line)

    plan = oc.plan_install(Path(data_root or STATE.data_root), output_dir, quantization, name)
    files = ([plan.gguf] if plan.gguf else []) + plan.adapters
    digests: dict[Path, str] = {}
    with oc.OllamaClient(ollama) as client:
        client.tags()  # fail fast (one line) when nothing answers, before hashing gigabytes
        progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                            TimeRemainingColumn(), console=console, transient=True,
                            disable=console is None or not console.is_terminal)
        with progress:
            for f in files:
                size = f.stat().st_size
                note(f"hashing {f.name} ({size:,} bytes)")
                t = progress.add_task(f"hash {f.name}", total=size)
                digests[f] = oc.sha256_file(f, lambda n, t=t: progress.advance(t, n))
                progress.remove_task(t)
                if client.has_blob(digests[f]):
                    note(f"{f.name}: already on the server ({digests[f][:19]}…), not uploading")
                    continue
                note(f"uploading {f.name} to {client.base_url}")
                t = progress.add_task(f"upload {f.name}", total=size)
                client.push_blob(f, digests[f], lambda n, t=t: progress.advance(t, n))
                progress.remove_task(t)
        note(f"creating {name!r} from {plan.modelfile_path.name}")
        client.create(plan.create_payload(digests))
        manifest.update(plan.run_dir, installs=_with_install(manifest.load(plan.run_dir), name, {
            "quantization": plan.quantization, "url": client.base_url,
            "digest": digests.get(plan.gguf) if plan.gguf else None, "installed": manifest.now()}))
        note(f"smoke prompt: {plan.smoke_prompt!r}")
        resp = client.chat(name, plan.smoke_prompt, {"num_predict": smoke_max_tokens, "temperature": 0})
        reply = oc.smoke_check(resp, name, smoke_max_tokens)
    return OllamaInstalled(name, output_dir, plan.quantization, client.base_url, reply, log)


def ollama_install(
    name: str = typer.Argument(..., help="Name for the model in Ollama, e.g. my-model or my-model:q4."),
    output_dir: str = typer.Option(..., "--output-dir", help="Run folder under <data root>/outputs/."),
    quantization: str = typer.Option("Q4_K_M", "--quantization", help="Which exported GGUF to install."),
    ollama: Optional[str] = typer.Option(None, "--ollama", help=OLLAMA_OPT_HELP),
    smoke_max_tokens: int = typer.Option(256, "--smoke-max-tokens", min=1,
                                         help="Token limit of the smoke prompt; hitting it fails the install."),
) -> None:
    """Register an exported run with Ollama: upload the GGUF, create the model from its Modelfile, smoke-test it.

    Works against the compose `ollama` service and against an Ollama you already run on this machine.

    Example: kolo ollama-install my-model --output-dir my-run --quantization Q4_K_M
    """
    from ..console import say

    done = install_ollama(name, output_dir, quantization, ollama, smoke_max_tokens, console=_stderr())
    say("installed", "green", f"{name} ({done.quantization} of {output_dir}) in Ollama at {done.url}; "
                              f"reply: {done.reply.strip()[:200]!r}\nchat with it: ollama run {name}")


def _with_install(data: dict[str, Any], name: str, record: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's ``installs`` section with ``name`` set to ``record`` (or removed when record is None)."""
    installs = dict(data.get("installs") or {})
    ollama = dict(installs.get("ollama") or {})
    if record is None:
        ollama.pop(name, None)
    else:
        ollama[name] = record
    installs["ollama"] = ollama
    return installs


# ----------------------------------------------------------------------------------------- ollama-uninstall
def ollama_uninstall(
    name: str = typer.Argument(..., help="The model name in Ollama."),
    ollama: Optional[str] = typer.Option(None, "--ollama", help=OLLAMA_OPT_HELP),
) -> None:
    """Remove a model from Ollama (the run folder and its GGUFs stay).

    Example: kolo ollama-uninstall my-model
    """
    from .. import ollama_client as oc

    oc.check_model_name(name)
    with oc.OllamaClient(ollama) as client:
        client.delete(name)
    # forget the install in whichever run recorded it, so `kolo list` stays truthful
    from kolo_trainer.runfolder import DamagedManifest

    for run in STATE.data().runs():
        try:
            data = run.manifest() if run.is_run() else {}
        except DamagedManifest:
            continue  # not readable, so it records nothing we could forget
        recorded = ((data.get("installs") or {}).get("ollama") or {})
        for n in [n for n in recorded if oc.same_model(n, name)]:
            run.update(installs=_with_install(run.manifest(), n, None))
    _stdout().print(f"removed {name} from Ollama at {client.base_url}")


# ------------------------------------------------------------------------------------------------------- list
def _list_row(run: Any, tags: Optional[list[str]]) -> dict[str, Any]:
    """One row of `kolo list`; a damaged kolo.json or a folder that is not a run is shown as such, never fatal."""
    from kolo_trainer.runfolder import DamagedManifest
    from .. import ollama_client as oc

    try:
        data = run.manifest() if run.is_run() else None
        status = run.status(data) if data is not None else "not a kolo run (no kolo.json)"
    except DamagedManifest:
        data, status = {}, "damaged kolo.json"
    except KoloError:
        data, status = {}, "unreadable kolo.json"
    data = data or {}
    recorded = sorted(((data.get("installs") or {}).get("ollama") or {}).keys())
    installed: Any = "unknown" if tags is None else [n for n in recorded if any(oc.same_model(n, t) for t in tags)]
    return {"name": run.name, "status": status, "base_model": (data.get("base_model") or {}).get("id"),
            "updated": data.get("updated"), "quantizations": run.quantizations_on_disk(), "ollama": installed}


def list_runs(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ollama: Optional[str] = typer.Option(None, "--ollama", help=OLLAMA_OPT_HELP),
) -> None:
    """List the runs under <data root>/outputs/, their GGUF quantisations and which are installed in Ollama.

    When Ollama does not answer, the Ollama column says "unknown" (the listing still works).

    Example: kolo list --json
    """
    from .. import ollama_client as oc

    tags: Optional[list[str]] = None
    ollama_error = None
    try:
        with oc.OllamaClient(ollama, timeout=10.0) as client:
            tags = client.tags()
            url = client.base_url
    except KoloError as e:
        ollama_error = e.message
        url = oc.normalise_url(ollama) if ollama else oc.default_url()

    rows = [_list_row(run, tags) for run in STATE.data().runs()]
    if as_json:
        print(json.dumps({"data_root": str(STATE.data().path), "ollama_url": url,
                          "ollama_error": ollama_error, "runs": rows}, indent=2))
        return
    from rich.table import Table

    out = _stdout()
    outputs = STATE.data().outputs
    if not rows:
        out.print(f"no runs under {outputs} yet — train one with `kolo train`")
    else:
        table = Table(title=f"kolo runs in {outputs}")
        for col in ("run", "status", "base model", "GGUF", "in Ollama"):
            table.add_column(col)
        for r in rows:
            inst = r["ollama"]
            table.add_row(r["name"], r["status"], r["base_model"] or "-", ", ".join(r["quantizations"]) or "-",
                          inst if isinstance(inst, str) else (", ".join(inst) or "-"))
        out.print(table)
    if ollama_error:
        from ..console import say

        say("Ollama unknown:", "yellow", ollama_error, stderr=True)


# ----------------------------------------------------------------------------------------------------- delete
def delete(
    output_dir: str = typer.Argument(..., help="Run folder under <data root>/outputs/."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask; delete."),
) -> None:
    """Delete one run under <data root>/outputs/ (asks you to type its name; --yes skips).

    Deletes only what kolo wrote: a folder without kolo.json is not a run and is refused; files you added to a run
    folder stay (and are listed). Never follows a link. Models installed in Ollama keep working (Ollama holds its
    own copy).

    Example: kolo delete my-run
    """
    run = _run(output_dir)
    run.require()  # a run, not a file, a link or the user's own folder; a damaged kolo.json is still a run
    holder = run.holder()
    if holder:
        raise OutputExistsError(f"{run.label} is in use (pid {holder.get('pid')} on {holder.get('host')} holds "
                                f"{run.path / '.lock'})", hint="wait for it to finish or stop it first")
    if not yes:
        typed = typer.prompt(f"This deletes {run.path} and everything kolo wrote in it. Type the run name to confirm")
        if typed != output_dir:
            raise KoloError(f"you typed {typed!r}, not {output_dir!r}; nothing was deleted")
    try:
        kept = run.delete()
    except PermissionError as e:
        raise KoloError(f"cannot delete {run.label}: {e.strerror} ({e.filename})",
                        hint="files written inside the container may belong to another user; "
                             "delete them from `kolo shell` or with sudo") from None
    if kept:
        _stdout().print(f"deleted kolo's files of {run.path}; kept {len(kept)} entr{'y' if len(kept) == 1 else 'ies'} "
                        f"kolo did not write: {', '.join(kept[:10])}")
    else:
        _stdout().print(f"deleted {run.path}")


# ------------------------------------------------------------------------------------------ lmstudio-install
def _lmstudio_default() -> Path:
    return Path(os.environ.get("LMSTUDIO_MODELS_DIR") or Path.home() / ".lmstudio" / "models")


def place_file(src: Path, dest: Path) -> str:
    """Put ``src`` at ``dest`` atomically: a hard link when the filesystem allows it, else a copy.

    Returns "linked", "copied" or "already there". The link/copy goes to a temporary name in dest's folder and
    is renamed into place, so LM Studio never sees a half-copied GGUF.
    """
    from kolo_trainer.manifest import TMP_PREFIX

    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and os.path.samefile(src, dest):
        return "already there"
    tmp = dest.parent / f"{TMP_PREFIX}{os.getpid()}-{dest.name}"
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
        how = "linked"
    except OSError:  # another filesystem (EXDEV), Windows share, no permission: copy instead
        try:
            shutil.copyfile(src, tmp)
        except BaseException:
            if tmp.exists():
                tmp.unlink()
            raise
        how = "copied"
    os.replace(tmp, dest)
    return how


@dataclass
class LmStudioPlaced:
    """Where a run's GGUF went in LM Studio's models folder, and how (linked, copied, already there)."""

    path: Path
    how: str
    quantization: str
    publisher: str
    run: str


def place_lmstudio(output_dir: str, quantization: str = "Q4_K_M", models_dir: Optional[Path] = None,
                   publisher: str = "kolo", data_root: Optional[Path] = None) -> LmStudioPlaced:
    """Put the run's GGUF at <models dir>/<publisher>/<run>/<run>-<Q>.gguf (:func:`place_file`). `kolo
    lmstudio-install` and the Training Manager's deploy both call this."""
    from kolo_trainer import names, options

    try:
        names.check_plain(publisher)
    except ValueError as e:
        raise NameError_(f"--publisher {publisher!r}: {e}") from None
    quant = options.quantization(quantization)
    run = _run(output_dir, data_root=data_root)
    run.require(finished=True, verb="install")
    src = run.gguf_dir / f"{run.name}-{quant}.gguf"
    if not src.is_file():
        have = run.quantizations_on_disk()
        raise KoloError(f"run {output_dir!r} has no {quant} GGUF ({src} is missing)"
                        + (f"; exported: {', '.join(have)}" if have else ""),
                        hint=f"kolo export --output-dir {output_dir} --quantization {quant}")
    root = (models_dir or _lmstudio_default()).expanduser()
    dest = root / publisher / run.name / src.name
    return LmStudioPlaced(dest, place_file(src, dest), quant, publisher, run.name)


def lmstudio_install(
    output_dir: str = typer.Argument(..., help="Run folder under <data root>/outputs/."),
    quantization: str = typer.Option("Q4_K_M", "--quantization", help="Which exported GGUF to place."),
    models_dir: Optional[Path] = typer.Option(None, "--models-dir",
                                              help="LM Studio models folder (default: LMSTUDIO_MODELS_DIR or "
                                                   "~/.lmstudio/models)."),
    publisher: str = typer.Option("kolo", "--publisher", help="Publisher folder name in LM Studio's layout."),
) -> None:
    """Place a run's GGUF in LM Studio's models folder: <models dir>/<publisher>/<run>/<run>-<Q>.gguf.

    Hard-links when the models folder is on the same disk (no extra space), else copies.
    LM Studio reads the chat template from the GGUF itself.

    Example: kolo lmstudio-install my-run --quantization Q4_K_M
    """
    done = place_lmstudio(output_dir, quantization, models_dir, publisher)
    _stdout().print(f"{done.how}: {done.path}\nopen LM Studio → My Models; it lists {done.publisher}/{done.run}")


def compat(ctx: typer.Context, script: str = typer.Argument(..., help="Kolo script name, e.g. train_model_unsloth.")
           ) -> None:
    """Run one of Kolo's scripts by its old name and parameters (what scripts/*.sh and *.ps1 call).

    Example: kolo compat train_model_unsloth -Epochs 3 -LearningRate 1e-4 -WeightDecay 0
    """
    from .. import kolo_compat

    rc = kolo_compat.run(script, list(ctx.args))
    if rc:
        raise typer.Exit(rc)


def register(app: typer.Typer) -> None:
    # compat is hidden: it exists for the Kolo-named shims in scripts/, not for typing. Its arguments are Kolo's
    # (-Epochs 3), so click must neither parse them nor claim --help.
    app.command("compat", hidden=True, context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                                         "allow_interspersed_args": False,
                                                         "help_option_names": []})(compat)
    app.command("ollama-install")(ollama_install)
    app.command("ollama-uninstall")(ollama_uninstall)
    app.command("list")(list_runs)
    app.command("delete")(delete)
    app.command("lmstudio-install")(lmstudio_install)
