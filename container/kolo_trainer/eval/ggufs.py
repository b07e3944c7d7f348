"""Which GGUFs of a run ``kolo eval`` measures. Light (no numpy, no torch): the host checks with it before any
trainer process starts, the trainer again before it loads anything."""

from __future__ import annotations

from ..errors import ExportError, OptionsError
from ..options import QUANTIZATIONS
from ..runfolder import Run


def gguf_files(run: Run, data: dict, wanted: list[str]) -> dict:
    """The exported GGUFs to evaluate (``wanted``, default all; F16 always when there), each resolved through its
    Modelfile (FROM, ADAPTER) by ``export.chat.exported``: a missing file is named with the export that writes it."""
    from ..export.chat import exported

    mfs = (data.get("export") or {}).get("modelfiles") or {}
    on_disk = run.quantizations_on_disk()
    have = [q for q in QUANTIZATIONS if q in mfs and q in on_disk]
    if not have:
        raise ExportError(f"cannot evaluate {run.label}: it has no exported GGUF",
                          hint=f"run `kolo export {run.name}` first (add --quantization Q for a quantised one)")
    missing = [q for q in wanted if q not in have]
    if missing:
        raise OptionsError([f"--quantization: {', '.join(missing)} not exported for {run.label} (exported: "
                            f"{', '.join(have)})"], hint=f"run `kolo export {run.name} --quantization {missing[0]}`,"
                           " or pick an exported one")
    return {q: exported(run, q) for q in have if not wanted or q in wanted or q == "F16"}


def check_run(run: Run, wanted: list[str]) -> dict:
    """A finished, exported run with the wanted GGUFs: its manifest, or the error a user can act on."""
    data = run.require(finished=True, verb="evaluate", error=ExportError)
    gguf_files(run, data, wanted)
    return data
