"""Training data in: JSONL / JSON / CSV files in the shapes people have -> conversations, with every problem
reported as ``file:line: reason``; nothing is dropped silently. Stdlib only (orjson optional): the host CLI
imports it for ``kolo data check`` / ``kolo data add``, so a file that passes on the host passes in the trainer.

Split by job:

================  ==============================================================================================
:mod:`.formats`   THE table of formats (messages, sharegpt, alpaca, prompt_completion, text): detection, row ->
                  messages, help text. Adding a format is one entry there.
:mod:`.readers`   JSONL (8 MiB blocks, orjson when installed), JSON and CSV readers; regular files only (a FIFO
                  or a device is refused before it is opened); the per-row size limit :data:`MAX_ROW_BYTES`
:mod:`.checks`    the conversation rules (slow exact reasons and fast verdicts), duplicates, ``raise_if_invalid``
:mod:`.consume`   the hot loop: chunks of rows validated with C-level maps, per-row paths for the rest
:mod:`.rowstats`  length statistics, streamed (``StatsAccumulator``); not named ``stats``, the function's name
:mod:`.loader`    ``load``: open, sniff, read, consume
:mod:`.parallel`  big files checked by several processes, merged into exactly the sequential result
:mod:`.cli`       ``check_main``: ``python -m kolo_trainer check`` and ``kolo data check``
:mod:`.results`   ``Row``, ``Problem``, ``LoadResult``, ``DropReport``
================  ==============================================================================================
"""

from __future__ import annotations

from .checks import raise_if_invalid
from .cli import check_main
from .formats import FORMATS, check_format, detect
from .loader import load
from .readers import MAX_ROW_BYTES, file_problem
from .results import DropReport, LoadResult, Problem, Row
from .rowstats import StatsAccumulator, stats

__all__ = ["FORMATS", "MAX_ROW_BYTES", "DropReport", "LoadResult", "Problem", "Row", "StatsAccumulator",
           "check_format", "check_main", "detect", "file_problem", "load", "raise_if_invalid", "stats"]
