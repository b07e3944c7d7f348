"""Trainer callbacks: progress events + train_log.jsonl, and Ctrl-C / SIGTERM -> checkpoint and stop.

``transformers`` is imported lazily (inside :func:`make_callbacks`) so this module stays importable without it:
the hooks live in plain classes (:class:`_Progress`, :class:`_Stop`), and TrainerCallback is mixed in on first use.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

from .. import progress


class StopFlag:
    """SIGINT/SIGTERM handler: the first signal asks for a clean stop at the end of the current step (checkpoint
    saved, manifest marked interrupted); a second one interrupts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        progress.emit("warning", message=f"{signal.Signals(signum).name} received: saving a checkpoint at the end of "
                                         "this step, then stopping (again to stop at once)")

    def install(self) -> "StopFlag":
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread (e.g. tests calling run() from a thread)
                pass
        return self

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum or signal.SIGINT)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class _Progress:
    """ProgressCallback's hooks: rank 0 writes train_log.jsonl and emits the progress events."""

    def __init__(self, log_path: Path, trainer_ref: dict) -> None:
        self.log_path, self.trainer_ref = log_path, trainer_ref
        self.t0 = 0.0
        self.last_t = 0.0
        self.last_pause = 0.0
        self.last_tokens = 0
        self.start_step = 0
        self.start_tokens = 0
        self.train_time = 0.0
        self.last_loss: float | None = None
        self.last_eval: float | None = None
        self.tokens_per_s: float | None = None

    def _pause(self) -> float:
        t = self.trainer_ref.get("trainer")
        return float(getattr(t, "kolo_pause_s", 0.0)) if t is not None else 0.0

    def on_train_begin(self, args, state, control, **kw):
        if not state.is_world_process_zero:
            return
        self.t0 = self.last_t = time.perf_counter()
        self.last_pause = self._pause()
        self.start_step = state.global_step
        self.start_tokens = self.last_tokens = int(state.num_input_tokens_seen or 0)
        progress.emit("progress", stage="train", step=state.global_step, total=state.max_steps,
                      epoch=_num(state.epoch))

    def _write(self, record: dict) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero:
            return  # rank 0 writes train_log.jsonl and the events (the logged loss is already averaged)
        logs = logs or {}
        now = time.perf_counter()
        pause = self._pause()
        tokens = int(state.num_input_tokens_seen or 0)
        record: dict[str, Any] = {"step": state.global_step, "epoch": _num(state.epoch)}
        if "loss" in logs:
            dt = (now - self.last_t) - (pause - self.last_pause)
            if dt > 0 and tokens >= self.last_tokens:
                self.tokens_per_s = (tokens - self.last_tokens) / dt
            self.train_time += max(dt, 0.0)
            self.last_t, self.last_pause, self.last_tokens = now, pause, tokens
            self.last_loss = _num(logs["loss"])
            record.update(loss=self.last_loss, learning_rate=_num(logs.get("learning_rate")),
                          grad_norm=_num(logs.get("grad_norm")), tokens_seen=tokens,
                          tokens_per_s=round(self.tokens_per_s, 1) if self.tokens_per_s else None)
        if "eval_loss" in logs:
            self.last_eval = _num(logs["eval_loss"])
            record["eval_loss"] = self.last_eval
        if "loss" not in logs and "eval_loss" not in logs:
            return  # the final train summary (train_runtime, ...) is not a logging step
        done = state.global_step - self.start_step
        eta = None
        if done > 0 and self.train_time > 0:
            eta = round(self.train_time / done * max(state.max_steps - state.global_step, 0), 1)
        self._write(record)
        progress.emit("progress", stage="train", step=state.global_step, total=state.max_steps,
                      loss=self.last_loss, eval_loss=self.last_eval,
                      learning_rate=record.get("learning_rate"),
                      tokens_per_s=round(self.tokens_per_s, 1) if self.tokens_per_s else None,
                      eta_s=eta, epoch=_num(state.epoch))

    def on_save(self, args, state, control, **kw):
        if state.is_world_process_zero:
            progress.emit("metric", stage="train", name="checkpoint", value=f"checkpoint-{state.global_step}")


class _Stop:
    """StopCallback's hook: every rank stops at the same step when any got a signal (see agreed_signal)."""

    def __init__(self, stop: StopFlag, dist: Any) -> None:
        self.stop, self.dist = stop, dist

    def on_step_end(self, args, state, control, **kw):
        from . import distributed

        distributed.crash_hook(self.dist, state.global_step)
        signum = distributed.agreed_signal(self.dist, self.stop.signum, args.device)
        if signum is not None:  # a rank that got no signal itself stops (and exits) the same way
            self.stop.signum = self.stop.signum or signum
            control.should_save = True
            control.should_training_stop = True


def make_callbacks(log_path: Path, stop: StopFlag, trainer_ref: dict, dist: Any = None) -> list:
    """The callback instances. ``trainer_ref['trainer']`` is filled in once the Trainer exists (the callback
    reads the time spent in evaluation/saving from it so tokens/s measures training only). ``dist``: this
    process's rank (``train.distributed.Dist``); only rank 0 logs and reports progress."""
    from transformers import TrainerCallback

    from . import distributed

    class ProgressCallback(_Progress, TrainerCallback):  # the hooks first: they override TrainerCallback's no-ops
        pass

    class StopCallback(_Stop, TrainerCallback):
        pass

    return [ProgressCallback(log_path, trainer_ref), StopCallback(stop, dist if dist is not None else
                                                                  distributed.Dist())]


def truncate_log(log_path: Path, max_step: int) -> None:
    """Drop log lines after ``max_step`` (a resumed run redoes those steps and logs them again)."""
    if not log_path.exists():
        return
    keep = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= max_step:
                keep.append(line)
        except (ValueError, AttributeError):
            continue  # a torn last line from a killed run
    tmp = log_path.with_name(log_path.name + f".tmp-{os.getpid()}")
    tmp.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
    os.replace(tmp, log_path)


def read_log(log_path: Path) -> list[dict]:
    out = []
    if log_path.exists():
        for line in log_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out
