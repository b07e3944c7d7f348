"""The model's shape from its config.json alone (no weights, no network), and the parameter counts that follow.

Light: stdlib only. The counts follow the module layout transformers builds for the decoder-only families kolo
trains (Llama, Mistral, Qwen 2/3, Gemma, Phi-3, Granite, SmolLM): per layer q/k/v/o projections sized by the
head counts, a gated MLP (gate/up/down), RMSNorms; token embeddings and an output head unless they are tied
(cf. "counting parameters in a transformer", https://michaelwornow.net/2024/01/18/counting-params-in-transformer).
tests/unit/trainer/test_plan_arch.py checks the count against a real model's ``sum(p.numel())``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Families whose configs default to tied input/output embeddings when the key is missing.
TIED_BY_DEFAULT = ("gemma", "gemma2", "gemma3", "gemma3_text")
#: Families with a bias on q/k/v (not o) whatever ``attention_bias`` says (Qwen 2's attention); elsewhere
#: ``attention_bias`` puts a bias on all four projections (Llama's rule).
QKV_BIAS = ("qwen2",)
#: Extra per-head RMSNorms on q and k (Qwen 3, Gemma 3) and the two extra per-layer norms (Gemma 2/3).
QK_NORM = ("qwen3", "gemma3", "gemma3_text")
FOUR_NORMS = ("gemma2", "gemma3", "gemma3_text")
#: The linear layers of one decoder block, by the leaf names transformers gives them.
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Arch:
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    experts: int = 1
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    dtype: str = "float32"

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one block (experts counted in :meth:`layer_linear_params`)."""
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
                "o_proj": (self.q_dim, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def layer_linear_params(self) -> int:
        """Weights (and biases) of one block's linear layers: what 4-bit quantisation and LoRA act on."""
        shapes = self.linear_shapes()
        attn = sum(a * b for k, (a, b) in shapes.items() if k in ATTN)
        mlp = sum(a * b for k, (a, b) in shapes.items() if k in MLP) * self.experts
        bias = (self.q_dim + 2 * self.kv_dim if self.qkv_bias else 0) + (self.hidden if self.o_bias else 0)
        bias += (2 * self.intermediate + self.hidden) * self.experts if self.mlp_bias else 0
        router = self.hidden * self.experts if self.experts > 1 else 0
        return attn + mlp + bias + router

    def layer_norm_params(self) -> int:
        norms = (4 if self.model_type in FOUR_NORMS else 2) * self.hidden
        return norms + (2 * self.head_dim if self.model_type in QK_NORM else 0)

    def embedding_params(self) -> int:
        """Input embeddings plus the output head (once when tied)."""
        return self.vocab * self.hidden * (1 if self.tied else 2)

    def total_params(self) -> int:
        per_layer = self.layer_linear_params() + self.layer_norm_params()
        return self.layers * per_layer + self.embedding_params() + self.hidden  # + the final norm

    def quantizable_params(self) -> int:
        """The block linears: what bitsandbytes packs to 4 bits under QLoRA (embeddings, head, norms stay)."""
        return self.layers * self.layer_linear_params()


def _int(cfg: dict, *keys: str, default: int | None = None) -> int:
    for k in keys:
        v = cfg.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    if default is None:
        raise KeyError(keys[0])
    return default


def from_config(cfg: dict[str, Any]) -> Arch:
    """An :class:`Arch` from a config.json dict (a multimodal config's ``text_config`` is used when present).
    Raises KeyError naming the first missing key."""
    if isinstance(cfg.get("text_config"), dict):
        cfg = {**cfg["text_config"], "model_type": cfg["text_config"].get("model_type", cfg.get("model_type"))}
    mt = str(cfg.get("model_type") or "")
    h = _int(cfg, "hidden_size", "n_embd", "d_model")
    heads = _int(cfg, "num_attention_heads", "n_head")
    tied = cfg.get("tie_word_embeddings")
    return Arch(
        model_type=mt, hidden=h, layers=_int(cfg, "num_hidden_layers", "n_layer"), heads=heads,
        kv_heads=_int(cfg, "num_key_value_heads", default=heads), head_dim=_int(cfg, "head_dim", default=h // heads),
        intermediate=_int(cfg, "moe_intermediate_size", "intermediate_size", "n_inner", default=4 * h),
        vocab=_int(cfg, "vocab_size"), tied=bool(tied) if tied is not None else mt in TIED_BY_DEFAULT,
        experts=_int(cfg, "num_local_experts", "num_experts", default=1),
        qkv_bias=bool(cfg.get("attention_bias")) or mt in QKV_BIAS, o_bias=bool(cfg.get("attention_bias")),
        mlp_bias=bool(cfg.get("mlp_bias")),
        dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32"))


def hub_cache_dirs() -> list[Path]:
    """Where huggingface_hub keeps downloads, in its own order of precedence (HF_HUB_CACHE, HF_HOME/hub, the
    default ~/.cache/huggingface/hub); the trainer image sets HF_HOME to its cache volume."""
    out = []
    if os.environ.get("HF_HUB_CACHE"):
        out.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        out.append(Path(os.environ["HF_HOME"]) / "hub")
    xdg = os.environ.get("XDG_CACHE_HOME")
    out.append((Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub")
    return out


def cached_config(model_id: str) -> Path | None:
    """config.json of ``model_id`` in the local Hugging Face cache (the snapshot refs/main points at, else the
    newest one), or None. Reads files only: the layout is huggingface_hub's documented cache layout."""
    folder = "models--" + model_id.strip().replace("/", "--")
    for cache in hub_cache_dirs():
        snaps = cache / folder / "snapshots"
        if not snaps.is_dir():
            continue
        ref = cache / folder / "refs" / "main"
        if ref.is_file():
            cand = snaps / ref.read_text(encoding="utf-8").strip() / "config.json"
            if cand.is_file():
                return cand
        found = sorted(snaps.glob("*/config.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        if found:
            return found[0]
    return None


def load(local: Path | None, model_id: str) -> tuple[Arch | None, str]:
    """(the architecture or None, where it came from or why it is unknown)."""
    path = local / "config.json" if local is not None else cached_config(model_id)
    if path is None:
        return None, (f"{model_id} is not in the local Hugging Face cache; the estimate needs its config.json "
                      "(download the model once, or give a model folder under the data root)")
    try:
        return from_config(json.loads(path.read_text(encoding="utf-8"))), str(path)
    except (OSError, ValueError) as e:
        return None, f"{path}: cannot read it ({e})"
    except KeyError as e:
        return None, f"{path}: no {e.args[0]} (an architecture kolo's estimate does not know)"
