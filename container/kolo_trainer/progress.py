"""Machine-readable progress: the trainer writes JSON lines, the host renders them as rich progress bars.

A progress line is ``@@kolo {json}`` on stdout, one per event. Everything else the trainer prints is ordinary log
output and is passed through untouched. The prefix keeps the protocol robust against libraries that print to
stdout. Stdlib only: both halves import it.

Events (``event`` key):
  ``stage``     {stage, status: start|done|skip, detail?}        e.g. stage=train, stage=convert, stage=verify
  ``progress``  {stage, step, total, loss?, eval_loss?, learning_rate?, tokens_per_s?, eta_s?, epoch?}
  ``metric``    {stage, name, value}
  ``result``    {stage, ...}                                    final figures of a stage (paths, sample text)
  ``warning``   {message}
"""

from __future__ import annotations

import json
import sys
from typing import Any

PREFIX = "@@kolo "


def emit(event: str, **fields: Any) -> None:
    """Write one progress event to stdout and flush (the host reads it live through docker exec)."""
    payload = {"event": event, **{k: v for k, v in fields.items() if v is not None}}
    sys.stdout.write(PREFIX + json.dumps(payload, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def parse_line(line: str) -> dict[str, Any] | None:
    """The event in ``line``, or None for an ordinary log line."""
    if not line.startswith(PREFIX):
        return None
    try:
        obj = json.loads(line[len(PREFIX):])
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) and "event" in obj else None
