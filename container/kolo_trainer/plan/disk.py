"""Disk a run writes: checkpoints, the saved adapter or model, the merged 16-bit model, the F16 GGUF and each
quantisation. THE owner of these figures: ``preflight`` (the free-disk check before training and export) asks here.

GGUF sizes use llama.cpp's own size table (tools/quantize/quantize.cpp, QUANT_OPTIONS: the file size of
Llama-3-8B, 8.03e9 parameters, in GiB per type) turned into effective bits per weight. These include the mixes each
type really writes (Q4_K_M keeps attn_v/ffn_down halves and output.weight in Q6_K; Q4_0 keeps the output in Q6_K),
which the bare block sizes of ggml-common.h (Q4_0 4.5, Q4_K 4.5, Q5_K 5.5, Q6_K 6.5625, Q8_0 8.5 bits) do not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .arch import Arch
from .memory import Setup, lora_params, saved_params

#: Effective bits per weight per llama.cpp type: quantize.cpp's GiB for Llama-3-8B x 2^30 x 8 / 8.03e9.
BPW = {"F16": 16.0, "BF16": 16.0, "Q8_0": 8.51, "Q6_K": 6.57, "Q5_K_M": 5.70, "Q4_K_M": 4.90, "Q4_0": 4.64}
#: Files in a model folder that are weights (everything else -- tokenizer, configs -- is copied alongside).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack")


@dataclass
class Disk:
    checkpoint_each: int = 0
    checkpoints: int = 0  # how many exist at the peak (save_total_limit + the one being written, at most)
    checkpoints_kept: int = 0  # how many stay at the end
    final: int = 0  # adapter/ or model/
    merged: int = 0  # export: merged/ (LoRA runs only; a full run converts model/ directly)
    gguf: dict[str, int] = field(default_factory=dict)  # every type, requested or not
    requested: list[str] = field(default_factory=list)  # F16 + the --quantization types

    @property
    def train_bytes(self) -> int:
        return self.checkpoint_each * self.checkpoints + self.final

    @property
    def export_bytes(self) -> int:
        return self.merged + sum(self.gguf[q] for q in self.requested) if self.requested else 0

    @property
    def written_bytes(self) -> int:
        """What stays on disk at the end of train (+ export): the figure bytes actually written compare with."""
        return self.checkpoint_each * self.checkpoints_kept + self.final + self.export_bytes

    @property
    def need_bytes(self) -> int:
        """Free disk the whole run needs at its peak."""
        return self.train_bytes + self.export_bytes


def side_files(folder: Path | None) -> int:
    """Bytes of a local model folder's non-weight files (tokenizer, configs), copied into every save."""
    if folder is None or not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.suffix not in WEIGHT_SUFFIXES)


def gguf_bytes(params: int, quant: str) -> int:
    return int(params * BPW.get(quant, 16.0) / 8)


def checkpoint_saves(total_steps: int, save_steps: int) -> int:
    """Trainer saves every save_steps and once more at the last step (save_strategy "steps")."""
    return math.ceil(total_steps / save_steps) if total_steps > 0 else 0


def estimate(arch: Arch, s: Setup, *, total_steps: int, save_steps: int, save_total_limit: int,
             quantizations: list[str], side: int = 0) -> Disk:
    """``side`` is the tokenizer/config bytes copied into each checkpoint and saved folder."""
    n = arch.total_params()
    if s.method == "full":
        trainable_bytes = n * s.weight_bytes
        optimizer = 2 * n * s.weight_bytes
    else:
        lora, saved = lora_params(arch, s), saved_params(arch, s)
        trainable_bytes = lora * 4 + saved * s.weight_bytes
        optimizer = lora * (2 if s.method == "qlora" else 8) + saved * 2 * s.weight_bytes
    d = Disk(checkpoint_each=trainable_bytes + optimizer + side, final=trainable_bytes + side)
    saves = checkpoint_saves(total_steps, save_steps)
    d.checkpoints, d.checkpoints_kept = min(saves, save_total_limit + 1), min(saves, save_total_limit)
    d.gguf = {q: gguf_bytes(n, q) for q in BPW}
    if quantizations:
        d.requested = list(dict.fromkeys(["F16", *quantizations]))
        d.merged = 0 if s.method == "full" else n * 2 + side
    return d


def export_bytes(f16: int, quantizations: list[str], merged: bool = True) -> int:
    """Free disk an export needs, from the 16-bit size of the model (for ``kolo export`` on an existing run)."""
    quants = dict.fromkeys(["F16", *quantizations])
    return (f16 if merged else 0) + int(sum(f16 * BPW.get(q, 16.0) / 16 for q in quants))


def model_bytes_16(folder: Path | None) -> int:
    """Bytes of a local model's weights in 16-bit (what merged/ and the F16 GGUF take); 0 when unknown."""
    import json

    if folder is None or not folder.is_dir():
        return 0
    size = sum(p.stat().st_size for p in folder.glob("*") if p.suffix in (".safetensors", ".bin") and p.is_file())
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cfg = {}
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32")
    return size // 2 if "32" in dtype else size
