"""The models ``kolo eval`` compares, each fed the same token ids.

The HF reference is what the run has: the export's merged 16-bit model (``merged/``), the full fine-tune
(``model/``), or the base model + the LoRA adapter, loaded in float32 as export verification loads it
(:func:`kolo_trainer.export.verify.hf_model`). Each GGUF is the one its Modelfile names (FROM, and ADAPTER for an
``--adapter-only`` export), resolved by :func:`kolo_trainer.export.chat.exported`, loaded by llama.cpp with
``logits_all`` so every position's logits can be read after one evaluation of the ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..export import stages
from ..export.main import method_of
from ..runfolder import DataRoot, Run


@dataclass
class Reference:
    model: str  # a folder, or a hub id for a LoRA run's base
    adapter: Optional[Path]
    label: str

    @property
    def tokenizer_dir(self) -> str:
        # The adapter folder carries the tokenizer training saved (verify's rule).
        if self.adapter is not None and (self.adapter / "tokenizer_config.json").is_file():
            return str(self.adapter)
        return self.model


def reference(root: DataRoot, run: Run, data: dict) -> Reference:
    from ..export.merge import resolve_base

    if (run.path / "merged" / "config.json").is_file():
        return Reference(str(run.path / "merged"), None, "merged/ (the export's 16-bit merge)")
    if method_of(data) == "full":
        return Reference(str(run.path / "model"), None, "model/ (the full fine-tune)")
    ctx = stages.Context(root=root.path, run_dir=run.path, name=run.name, opts=None, data=data)
    return Reference(resolve_base(ctx), run.path / "adapter", "the base model + adapter/ (float32)")


def load_hf(ref: Reference) -> Any:
    from ..export.verify import hf_model

    return hf_model(Path(ref.model) if Path(ref.model).is_dir() else ref.model, ref.adapter)  # type: ignore[arg-type]


def hf_rows(model: Any, ids: list[int], pos: list[int]) -> np.ndarray:
    """The HF model's logits at the positions that predict ``pos`` (one forward pass)."""
    import torch

    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0]
    return logits[[p - 1 for p in pos]].float().cpu().numpy()


def load_gguf(gguf: Path, adapter: Optional[Path], n_ctx: int) -> Any:
    from ..export.verify import load_llama

    return load_llama(gguf, adapter, n_ctx=n_ctx, logits_all=True)


def gguf_rows(llm: Any, ids: list[int], pos: list[int]) -> np.ndarray:
    """llama.cpp's logits at the positions that predict ``pos``, after evaluating exactly ``ids``."""
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[[p - 1 for p in pos]], dtype=np.float32)


def gguf_ids(llm: Any, text: str, bos: Optional[str]) -> list[int]:
    """What llama.cpp (and so Ollama) makes of the rendered text: BOS from the GGUF's metadata, specials parsed."""
    from ..templates import strip_bos

    return list(llm.tokenize(strip_bos(text, bos).encode("utf-8"), add_bos=True, special=True))


def answer_text(tok: Any, out: list[int], stops: list[str]) -> str:
    text = tok.decode(out, skip_special_tokens=True)
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut] if cut >= 0 else text).strip()
