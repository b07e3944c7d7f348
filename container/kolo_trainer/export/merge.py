"""Stage 1: the LoRA merged into its base in 16-bit, saved as a plain HF model in ``<run>/merged/``.

Method ``full`` needs no merge: ``<run>/model`` is already a plain model and is converted directly.

Precision: the base is loaded in its own dtype when that is 16-bit (bf16 or f16; QLoRA adapters are merged into
the 16-bit base, never into the 4-bit one), else in float32; the merged weights are saved in bf16 when the base
is bf16, otherwise f16. The converter then writes F16 (exact for bf16 values inside f16's range).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..errors import ExportError
from . import stages

#: Tokenizer files copied byte for byte (re-saving through transformers can change a tokenizer: transformers 5
#: picks Qwen2Tokenizer for any qwen2 model whatever tokenizer_config.json says).
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json")


def resolve_base(ctx: stages.Context) -> str:
    """The base model as a local folder when there is one (data root relative or absolute), else the hub id."""
    bm = ctx.data.get("base_model") or {}
    opts = ctx.data.get("options") or {}
    candidates: list[str] = []
    for key in ("local_path", "id"):
        v = bm.get(key)
        if v:
            candidates.append(str(v))
    if opts.get("base_model"):
        candidates.append(str(opts["base_model"]))
    for c in candidates:
        p = Path(c)
        for cand in ([p] if p.is_absolute() else [ctx.root / p]):
            if (cand / "config.json").is_file():
                return str(cand)
    for c in candidates:
        if not Path(c).is_absolute() and "/" in c and not (ctx.root / c).exists():
            return c  # a hub id; transformers uses its cache (or downloads when online)
    raise ExportError(f"cannot find the base model of run {ctx.name!r} (tried {', '.join(map(repr, candidates))})",
                      "put the base model folder back under the data root, or re-train")


def base_fingerprint(base: str, ctx: stages.Context) -> Any:
    p = Path(base)
    if p.is_dir():
        return {k: v for k, v in stages.tree_sig(p).items() if k.endswith((".json", ".safetensors", ".model", ".bin"))}
    return {"hub_id": base, "revision": (ctx.data.get("base_model") or {}).get("revision")}


def _target_dtype(config: dict):
    import torch

    name = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    if name in ("bfloat16", "torch.bfloat16"):
        return torch.bfloat16, torch.bfloat16
    if name in ("float16", "torch.float16"):
        return torch.float16, torch.float16
    return torch.float32, torch.float16  # (load, save)


def merge(ctx: stages.Context, adapter_dir: Path, base: str, out: Path) -> None:
    """Merge ``adapter_dir`` into ``base`` and save model + tokenizer + chat template into ``out`` (a new folder)."""
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base).to_dict()
    load_dtype, save_dtype = _target_dtype(config)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=load_dtype, low_cpu_mem_usage=True)
    model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    model = model.merge_and_unload(progressbar=False, safe_merge=True)  # safe_merge: fail on NaNs, not later
    model = model.to(save_dtype)
    out.mkdir(parents=True)
    model.save_pretrained(out, safe_serialization=True)
    copy_tokenizer(adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else Path(base), out, ctx)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def copy_tokenizer(src: Path, out: Path, ctx: stages.Context) -> None:
    """Copy the tokenizer files and pin the training chat template into them (so the GGUF carries it too)."""
    if not src.is_dir():  # a hub id: let transformers fetch and save it
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(src)).save_pretrained(out)
    else:
        for name in TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, out / name)
    jinja = (ctx.data.get("chat_template") or {}).get("jinja")
    if not jinja:
        return
    if (out / "chat_template.jinja").is_file():
        (out / "chat_template.jinja").write_text(jinja, encoding="utf-8")
    cfg_path = out / "tokenizer_config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        if not (out / "chat_template.jinja").is_file():
            cfg["chat_template"] = jinja
        cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
