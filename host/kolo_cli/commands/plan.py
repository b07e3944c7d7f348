"""`kolo plan [train options] [--gpu-memory GiB] [--json]`: will this training run fit, before anything loads.

The flags are `kolo train`'s own (one definition: TrainOptions, through optionflags.make_command), merged with
--config like `kolo train`. The estimate itself (kolo_trainer.plan, stdlib only) runs where training would run,
through the same transport as `kolo train` (`python -m kolo_trainer plan`): it sees the container's GPU, its
Hugging Face cache and its disk. The host renders the ``result`` event as a table; nothing heavy is imported here.

Exit codes: 0 fits; 2 does not fit the GPU / RAM (the advice names the flags that fit); 1 fits in memory but not
on the disk, or no estimate is possible (the model's config.json cannot be read where the trainer runs).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Optional

import typer

from kolo_trainer.errors import KoloError, OptionsError

from ..state import STATE

HELP = (
    "Estimate a training run before anything loads: parameters, peak GPU memory (RAM on CPU) by part, host RAM, "
    "disk (checkpoints, merged model, GGUFs), rough time per epoch; says whether it fits and what makes it fit.\n\n"
    "Takes every `kolo train` option. Exit 0 fits, 2 does not fit the memory, 1 not the disk.\n\n"
    "Example: kolo plan --base-model unsloth/Llama-3.2-1B-Instruct --train-data data/chats.jsonl --gpu-memory 8"
)


class _Capture:
    """Keeps the plan's ``result`` event; the trainer's plain summary (stdout) is replaced by the table."""

    def __init__(self) -> None:
        from ..render import make_renderer

        self.inner, self.plan = make_renderer(), None

    def event(self, ev: dict[str, Any]) -> None:
        if ev.get("event") == "result" and ev.get("stage") == "plan":
            self.plan = ev.get("plan")
        elif ev.get("event") != "result":
            self.inner.event(ev)

    def log(self, line: str, stream: str = "stdout") -> None:
        if stream == "stderr":
            self.inner.log(line, stream)

    def close(self) -> None:
        self.inner.close()


def _options(flags: dict[str, Any], config: Path | None) -> dict[str, Any]:
    """The explicit options (config + flags), every problem at once; the run folder is not checked (a plan
    writes nothing)."""
    from kolo_trainer import spec
    from kolo_trainer.options import TrainOptions

    problems, cfg = [], {}
    if config is not None:
        try:
            cfg = spec.load_yaml(TrainOptions, config)
        except OptionsError as e:
            problems += e.problems
    try:
        _, explicit = spec.merge(TrainOptions, cfg, flags)
    except OptionsError as e:
        problems += e.problems
        explicit = {}
    if problems:
        raise OptionsError(problems, hint="see `kolo plan --help`")
    return explicit


def plan(flags: dict[str, Any], config: Optional[Path], as_json: bool) -> None:
    from kolo_trainer.options import TrainOptions

    from ..transport import make_transport, trainer_argv

    explicit = _options(flags, config)
    transport = make_transport(STATE.runtime, STATE.container, STATE.data().check().path, debug=STATE.debug)
    capture = _Capture()
    rc = transport.run(trainer_argv("plan", TrainOptions, explicit, transport.data_root), capture)
    if capture.plan is None:
        if rc == 0:
            raise KoloError("the trainer's plan reported no estimate", hint="run again with --debug")
        raise typer.Exit(rc)  # the trainer already said why (error: / hint: on stderr)
    if as_json:
        print(json.dumps(capture.plan, indent=2, ensure_ascii=False))
    else:
        render(capture.plan)
    if rc != 0:
        raise typer.Exit(rc)


def _gib(n: Any) -> str:
    if n is None:
        return "?"
    for unit, k in (("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if n >= 1024 ** k or k == 1:
            return f"{n / 1024 ** k:.2f} {unit}"
    return f"{n} B"


def _duration(s: Any) -> str:
    if s is None:
        return "unknown (no data, or a GPU kolo has no figures for)"
    if s < 1:
        return "< 1 s"
    return f"~{s:.0f} s" if s < 120 else f"~{s / 60:.0f} min" if s < 7200 else f"~{s / 3600:.1f} h"


def _memory_table(p: dict[str, Any]) -> Any:
    from rich.table import Table

    m, where = p["memory"], "GPU" if p["memory"]["device"] == "cuda" else "RAM (CPU training)"
    t = Table(title=f"peak {where}", show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(justify="right")
    for part, b in m["parts"].items():
        if b or part not in ("runtime", "adapters"):  # runtime: CPU only (RSS); adapters: LoRA only
            t.add_row(part, _gib(b))
    t.add_row("peak", _gib(m["peak_bytes"]))
    if m["device"] == "cuda":
        t.add_row("+ slack, CUDA context", _gib(m["need_bytes"]))
    t.add_row("available", _gib(m["budget_bytes"]) + f" ({p['machine']['source']})")
    if m["device"] == "cuda":
        t.add_row("host RAM", _gib(m["host_ram_bytes"]))
    return t


def _disk_table(p: dict[str, Any]) -> Any:
    from rich.table import Table

    d = p["disk"]
    t = Table(title="disk", show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row("checkpoints", f"{d['checkpoints']} x {_gib(d['checkpoint_bytes'])}")
    t.add_row("adapter/" if p["setup"]["method"] != "full" else "model/", _gib(d["final_bytes"]))
    if d["merged_bytes"]:
        t.add_row("merged/ (16-bit)", _gib(d["merged_bytes"]))
    for q, b in d["gguf_bytes"].items():
        t.add_row(f"GGUF {q}" + (" *" if q in d["requested"] else ""), _gib(b))
    t.add_row("needed (* = exported)", _gib(d["need_bytes"]))
    t.add_row("free", _gib(d["free_bytes"]))
    return t


def render(p: dict[str, Any]) -> None:
    from rich.columns import Columns

    from ..console import out, say

    s, tm = p["setup"], p["time"]
    con = out()
    con.print(f"{p['model']}  ({p['config']})")
    con.print(f"parameters {p['params']['total']:,}, trainable {p['params']['trainable']:,} ({s['method']}); "
              f"{s['device']}, {8 * s['weight_bytes']}-bit weights, batch {s['batch_size']} x {s['seq_len']} tokens, "
              f"gradient checkpointing {'on' if s['gradient_checkpointing'] else 'off'}")
    con.print(Columns([_memory_table(p), _disk_table(p)], padding=(0, 6)))
    con.print(f"time per epoch: {_duration(tm['seconds_per_epoch'])} (rough; {tm['tokens_per_epoch']:,} tokens "
              f"by {tm['token_count']}, {tm['total_steps']} steps in all)")
    for n in p["notes"]:
        say("note:", "yellow", n)
    if p["fits"]:
        say("verdict:", "bold green", "fits")
        return
    for x in p["problems"]:
        say("does not fit:", "bold red", x)
    for a in p["advice"]:
        say("fits with:" if a["fits"] else "still too big:", "green" if a["fits"] else "red",
            f"{a['flags']}  (~{_gib(a['need_bytes'])}, {a['change']})")


def register(app: typer.Typer) -> None:
    from ..optionflags import make_command
    from .train import config_param

    extra = [
        config_param(),
        inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--json", help="Print the plan as JSON.",
                                               rich_help_panel="Run")),
    ]
    make_command(app, "plan", "kolo_trainer.options:TrainOptions", plan, HELP, extra, rich_help_panel="Training")
