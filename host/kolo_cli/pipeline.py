"""What a verb runs in the trainer, as a list of steps: one owner for "kolo train = train, then export".

Train and export are separate trainer processes (``python -m kolo_trainer train`` / ``export``), chained here by
the caller and never by each other: the exporter then starts from a clean interpreter (no training library's
patched model code reaches its CPU verification), and each step's exit code means one thing. The CLI runs the
steps in order and stops at the first that fails; the job server will run the same steps.
"""

from __future__ import annotations

import os
from typing import Any

from .transport import Transport, trainer_argv


def train_steps(opts: Any, explicit: dict[str, Any], data_root: str | os.PathLike) -> list[list[str]]:
    """The trainer argv of ``kolo train``: training, then (with ``--quantization``) the export of that run."""
    from kolo_trainer.options import ExportOptions, TrainOptions

    steps = [trainer_argv("train", TrainOptions, explicit, data_root)]
    if opts.quantization:
        export = {"output_dir": opts.output_dir, "quantization": list(opts.quantization)}
        steps.append(trainer_argv("export", ExportOptions, export, data_root))
    return steps


def run_steps(transport: Transport, steps: list[list[str]], renderer_factory: Any) -> int:
    """Run each step with a fresh renderer; the first non-zero exit code ends the chain and is returned."""
    for argv in steps:
        rc = transport.run(argv, renderer_factory())
        if rc != 0:
            return rc
    return 0
