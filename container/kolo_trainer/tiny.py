"""Build the tiny demo/test model: a random-init Llama (or Qwen2) with a SentencePiece tokenizer.

THIS IS A TOY. It exists so that the whole pipeline (train -> merge -> GGUF -> quantise -> Modelfile -> verify ->
chat) runs offline on a CPU in a couple of minutes, with no model download. It memorises the bundled example
dataset and knows nothing else.

Why it looks the way it does (see ../shared/ENVIRONMENT.md):
* SentencePiece, BPE type, identity normalisation, byte fallback: llama.cpp's converter accepts SentencePiece
  ``tokenizer.model`` files (it refuses unknown BPE ``tokenizer.json`` pre-tokenizers), and llama.cpp's SPM
  tokenizer is score-ordered merging, which matches a BPE-type SentencePiece model token for token (a unigram
  model would tokenise differently). Identity normalisation + no whitespace folding keep newlines and double spaces
  byte-exact, which chat templates need.
* Every registry special token (``<|im_start|>``, ``<|eot_id|>``, ...) is a user-defined symbol, so each is one
  token in HF and in the GGUF.
* hidden_size defaults to 256: a multiple of 256 makes llama.cpp's k-quants (Q4_K_M) real instead of a silent
  fallback to q5_0.
"""

from __future__ import annotations

import argparse
import json
import os
from importlib import resources
from pathlib import Path

from . import manifest

TINY_INFO = "kolo-tiny.json"


def example_dataset_path() -> Path:
    """The bundled example dataset (messages format, written by the kolo authors)."""
    return Path(str(resources.files("kolo_trainer") / "assets" / "example.jsonl"))


def _corpus(extra_texts: list[str] | None) -> list[str]:
    lines: list[str] = []
    with open(example_dataset_path(), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            lines += [m["content"] for m in row["messages"]]
    lines += list(extra_texts or [])
    # A little general text so that words outside the dataset still get real pieces, not only byte fallbacks.
    lines += [
        "The quick brown fox jumps over the lazy dog.",
        "Hello, world! How are you today? I am fine, thank you.",
        "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. Symbols: ( ) [ ] { } < > / \\ | - _ = + * & ^ % $ # @ ! ? : ; ' \"",
        "Instruction, input, response, system, user, assistant, human, model.",
    ]
    return lines


def build_tokenizer(out_dir: str | os.PathLike, *, template: str = "chatml", vocab_size: int = 800,
                    extra_texts: list[str] | None = None) -> None:
    """Train a SentencePiece BPE tokenizer and write it in HF layout (tokenizer.model + tokenizer_config.json)."""
    import io

    import sentencepiece as spm

    from . import templates

    entry = templates.get(template)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    special = [t for t in templates.ALL_SPECIAL_TOKENS if t not in ("<s>", "</s>", "<unk>", "<pad>")]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus(extra_texts)),
        model_writer=buf,
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
        split_digits=True,
        character_coverage=1.0,
        user_defined_symbols=special,
        unk_id=0, bos_id=1, eos_id=2, pad_id=3,
        unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>", pad_piece="<pad>",
        num_threads=1,
        minloglevel=2,
    )
    (out / "tokenizer.model").write_bytes(buf.getvalue())
    # The end-of-turn token doubles as eos so generation (HF, llama.cpp, Ollama) stops at the end of a reply.
    eos = entry.stop[0] if entry.stop and entry.stop[0] in special else "</s>"
    added = {}
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    for tok in ["<unk>", "<s>", "</s>", "<pad>", *special]:
        added[str(sp.piece_to_id(tok))] = {
            "content": tok, "lstrip": False, "rstrip": False, "normalized": False,
            "single_word": False, "special": True,
        }
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": eos,
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "add_bos_token": True,
        "add_eos_token": False,
        # legacy=True: HF then puts the SentencePiece dummy-prefix space after every special token, exactly as
        # llama.cpp's SPM tokenizer does (GGUF add_space_prefix). With legacy=False HF tokenises
        # "<|im_start|>system" as [<|im_start|>, system] but llama.cpp (so Ollama) as [<|im_start|>, ▁system]:
        # the model would be served token ids it was never trained on (export verification (b) catches this).
        "legacy": True,
        "add_prefix_space": None,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 4096,
        "added_tokens_decoder": added,
        "chat_template": entry.jinja,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": eos, "unk_token": "<unk>", "pad_token": "<pad>"}, indent=2) + "\n")


def build_model(out_dir: str | os.PathLike, *, family: str = "llama", hidden_size: int = 256, num_layers: int = 2,
                num_heads: int = 4, intermediate_size: int | None = None, seed: int = 0) -> None:
    """Random-init a tiny causal LM matching the tokenizer already written to ``out_dir``."""
    import torch
    from transformers import AutoTokenizer

    out = Path(out_dir)
    tok = AutoTokenizer.from_pretrained(out)
    vocab = len(tok)
    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab, hidden_size=hidden_size, intermediate_size=intermediate_size or hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=4096, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False, rms_norm_eps=1e-5,
    )
    if family == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        model = LlamaForCausalLM(LlamaConfig(**common))
    elif family == "qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        raise ValueError(f"unknown family {family!r} (llama or qwen2)")
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)


def build(out_dir: str | os.PathLike, *, family: str = "llama", template: str = "chatml", hidden_size: int = 256,
          num_layers: int = 2, vocab_size: int = 800, seed: int = 0, force: bool = False) -> Path:
    """Build the tiny model into ``out_dir`` (atomically); a no-op when an identical one is already there."""
    out = Path(out_dir)
    params = {"family": family, "template": template, "hidden_size": hidden_size, "num_layers": num_layers,
              "vocab_size": vocab_size, "seed": seed, "version": 2}
    info = out / TINY_INFO
    if not force and info.exists():
        try:
            if json.loads(info.read_text()) == params:
                return out
        except (OSError, json.JSONDecodeError):
            pass
    with manifest.atomic_path(out) as tmp:
        build_tokenizer(tmp, template=template, vocab_size=vocab_size)
        build_model(tmp, family=family, hidden_size=hidden_size, num_layers=num_layers, seed=seed)
        (tmp / TINY_INFO).write_text(json.dumps(params, indent=2) + "\n")
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m kolo_trainer make-tiny-model",
                                description="Build the tiny demo model under <data root>/models/NAME (a toy).")
    p.add_argument("--data-root", default=os.environ.get("KOLO_DATA", "./kolo_data"))
    p.add_argument("--name", default="tiny")
    p.add_argument("--family", choices=["llama", "qwen2"], default="llama")
    p.add_argument("--template", default="chatml")
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    from .runfolder import DataRoot

    out = DataRoot(a.data_root).resolve(f"models/{a.name}", "model name")
    build(out, family=a.family, template=a.template, hidden_size=a.hidden_size, num_layers=a.layers, force=a.force)
    print(f"tiny model ready: {out}")
    return 0
