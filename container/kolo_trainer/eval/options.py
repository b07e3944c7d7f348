"""The one definition of ``kolo eval``'s options (``python -m kolo_trainer eval`` and the host flags derive from it).

Kept in the eval package, as the RAG verbs keep theirs, so the feature lives in one place.
"""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from ..options import QUANTIZATIONS, Quantizations, RelPath, RunName, _Options

#: The default quality budget a quantisation must stay within to be recommended: mean next-token KL divergence
#: from the HF model at most this (nats) ...
MAX_KL = 0.05
#: ... and the HF model's top-1 token predicted at least this often.
MIN_TOP1 = 0.9


class EvalOptions(_Options):
    """Options of ``kolo eval`` / ``python -m kolo_trainer eval``."""

    output_dir: RunName = Field(..., description="Run folder name under <data root>/outputs/ (an exported run).")
    quantization: Quantizations = Field(default_factory=list, description="GGUFs to evaluate (repeatable): "
                                    + ", ".join(QUANTIZATIONS) + " (default: every exported GGUF on disk; F16 is "
                                    "always included).")
    eval_data: Optional[RelPath] = Field(None, description="Evaluate on this file (relative to the data root) instead "
                                     "of the run's held-out rows.")
    max_rows: int = Field(32, ge=1, le=100_000, description="Conversations measured at most.")
    answers: int = Field(3, ge=0, le=100, description="Greedy answers shown side by side (the first conversations).")
    max_new_tokens: int = Field(64, ge=1, le=4096, description="Longest greedy answer, in tokens.")
    max_kl: float = Field(MAX_KL, ge=0.0, description="Quality budget: the largest mean next-token KL divergence "
                          "from the HF model (nats) a recommended GGUF may have.")
    min_top1: float = Field(MIN_TOP1, ge=0.0, le=1.0, description="Quality budget: the smallest top-1 agreement "
                            "with the HF model a recommended GGUF may have.")
