"""Progress events (``@@kolo {json}``, see ``kolo_trainer.progress``) -> what the user sees.

In a terminal: one rich progress bar per stage with the current loss, eval loss, learning rate and tokens/s; log
lines scroll above the bars. Elsewhere (CI logs, pipes): plain, greppable lines. Nothing here knows about
training or export in particular: stage names, totals and figures all come from the events, so every verb that
runs the trainer uses the same renderer.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO


def _fmt_num(v: Any) -> str:
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.2e}"
        return f"{v:.4g}"
    return str(v)


def _fmt_eta(s: Any) -> str:
    try:
        s = int(float(s))
    except (TypeError, ValueError):
        return str(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def metrics_text(ev: dict[str, Any]) -> str:
    """``loss 1.234  eval 1.5  lr 1.00e-04  412 tok/s  eta 0:12`` from whatever the event carries."""
    parts = []
    for key, label in (("loss", "loss"), ("eval_loss", "eval"), ("learning_rate", "lr")):
        if ev.get(key) is not None:
            parts.append(f"{label} {_fmt_num(ev[key])}")
    if ev.get("tokens_per_s") is not None:
        try:
            parts.append(f"{float(ev['tokens_per_s']):,.0f} tok/s")
        except (TypeError, ValueError):
            pass
    if ev.get("epoch") is not None:
        parts.append(f"epoch {_fmt_num(ev['epoch'])}")
    if ev.get("eta_s") is not None:
        parts.append(f"eta {_fmt_eta(ev['eta_s'])}")
    return "  ".join(parts)


class PlainRenderer:
    """One line per event; log lines pass through unchanged. For pipes, CI logs and tests."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None):
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def __enter__(self) -> "PlainRenderer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def log(self, line: str, stream: str = "stdout") -> None:
        target = self.err if stream == "stderr" else self.out
        target.write(line + "\n")
        target.flush()

    def event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("event")
        stage = ev.get("stage", "")
        if kind == "stage":
            detail = f": {ev['detail']}" if ev.get("detail") else ""
            text = f"[{stage}] {ev.get('status', '')}{detail}"
        elif kind == "progress":
            total = ev.get("total")
            pos = f"{ev.get('step', '?')}/{total}" if total else f"{ev.get('step', '?')}"
            text = f"[{stage}] step {pos}  {metrics_text(ev)}".rstrip()
        elif kind == "metric":
            text = f"[{stage}] {ev.get('name')} = {_fmt_num(ev.get('value'))}"
        elif kind == "warning":
            text = f"warning: {ev.get('message', '')}"
        elif kind == "result":
            fields = {k: v for k, v in ev.items() if k not in ("event", "stage")}
            text = f"[{stage}] result " + " ".join(f"{k}={v}" for k, v in fields.items())
        else:
            return  # unknown events are for newer hosts; an older host ignores them
        self.log(text, "stderr" if kind == "warning" else "stdout")

    def close(self) -> None:
        pass


class RichRenderer:
    """rich progress bars, one per stage; log lines are printed above them."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = Console(highlight=False)
        self.err_console = Console(stderr=True, highlight=False)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=self.console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self.started = False

    def __enter__(self) -> "RichRenderer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _start(self) -> None:
        if not self.started:
            self.progress.start()
            self.started = True

    def _task(self, stage: str, total: Any = None) -> Any:
        self._start()
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, metrics="")
        return self.tasks[stage]

    def log(self, line: str, stream: str = "stdout") -> None:
        from rich.text import Text

        # Text(...) so that brackets in trainer output are never read as rich markup.
        if self.started:
            self.progress.console.print(Text(line), style="dim red" if stream == "stderr" else None)
        else:
            (self.err_console if stream == "stderr" else self.console).print(Text(line))

    def event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("event")
        stage = str(ev.get("stage", ""))
        if kind == "stage":
            status = ev.get("status")
            task = self._task(stage)
            if status == "done":
                task_obj = next(t for t in self.progress.tasks if t.id == task)
                total = task_obj.total if task_obj.total is not None else max(task_obj.completed, 1)
                self.progress.update(task, total=total, completed=total)
                self.progress.stop_task(task)
            elif status == "skip":
                self.progress.update(task, total=1, completed=1, metrics="skipped")
                self.progress.stop_task(task)
            if ev.get("detail"):
                self.log(f"{stage}: {ev['detail']}")
        elif kind == "progress":
            task = self._task(stage, ev.get("total"))
            update: dict[str, Any] = {"metrics": metrics_text(ev)}
            if ev.get("total") is not None:
                update["total"] = ev["total"]
            if ev.get("step") is not None:
                update["completed"] = ev["step"]
            self.progress.update(task, **update)
        elif kind == "metric":
            self.log(f"{stage}: {ev.get('name')} = {_fmt_num(ev.get('value'))}")
        elif kind == "warning":
            self.log(f"warning: {ev.get('message', '')}", "stderr")
        elif kind == "result":
            fields = {k: v for k, v in ev.items() if k not in ("event", "stage")}
            self.log(f"{stage}: " + "  ".join(f"{k}={v}" for k, v in fields.items()))

    def close(self) -> None:
        if self.started:
            self.progress.stop()
            self.started = False


def make_renderer(plain: bool | None = None) -> PlainRenderer | RichRenderer:
    """Rich bars when stdout is a terminal, plain lines otherwise (or when ``plain`` says so)."""
    if plain is None:
        plain = not sys.stdout.isatty()
    return PlainRenderer() if plain else RichRenderer()
