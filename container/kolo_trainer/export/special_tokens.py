"""Make every added token of a model folder visible to llama.cpp's converter before converting it.

Why: for a SentencePiece model (``tokenizer.model``), llama.cpp's converter (``conversion/base.py``
``_create_vocab_sentencepiece``, from the sdist kolo installs) builds the vocabulary from ``tokenizer.model`` and
then reads added tokens from exactly two places: ``added_tokens.json`` (marked USER_DEFINED) and the
``added_tokens_decoder`` of ``tokenizer_config.json`` (CONTROL when ``special`` is true or the token looks
special). transformers 5 saves added tokens only in ``tokenizer.json`` (and names in ``extra_special_tokens``), so
tokens added on top of ``tokenizer.model`` -- the common "Llama-2/Mistral base + ChatML" recipe -- reach the GGUF as
``[PAD…]`` placeholders and ``<|im_start|>`` is split into ``<``, ``|``, ``i``, …. :func:`prepare` writes the
``added_tokens_decoder`` the converter reads, from ``tokenizer.json``'s own list (same ids, same flags), so the GGUF
marks them as control tokens. BPE models (``tokenizer.json`` only) already convert their added tokens; nothing is
written for them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

from ..errors import ExportError

_FLAGS = ("lstrip", "normalized", "rstrip", "single_word", "special")


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read {path}: {e}", "the model folder is damaged; re-run the merge") from None


def _decoder_entry(tok: dict) -> dict[str, Any]:
    return {"content": tok["content"], **{k: bool(tok.get(k, k == "special")) for k in _FLAGS}}


def template_tokens(chat_template: Optional[str], added: list[dict]) -> list[str]:
    """The added tokens the chat template writes literally (what must be single control tokens in the GGUF)."""
    if not chat_template:
        return []
    return [t["content"] for t in added if t.get("special") and t["content"] in chat_template]


def plan(model_dir: str | os.PathLike) -> tuple[dict, Optional[dict]]:
    """What :func:`prepare` would do: the report, and the new tokenizer_config.json (None when nothing changes)."""
    d = Path(model_dir)
    report: dict[str, Any] = {"kind": "none", "declared": [], "template_tokens": [], "out_of_range": []}
    if not (d / "tokenizer.json").is_file():
        return report, None
    added = list(_load(d / "tokenizer.json").get("added_tokens") or [])
    cfg_path = d / "tokenizer_config.json"
    cfg = _load(cfg_path) if cfg_path.is_file() else {}
    template = cfg.get("chat_template") if isinstance(cfg.get("chat_template"), str) else None
    if (d / "chat_template.jinja").is_file():
        template = (d / "chat_template.jinja").read_text(encoding="utf-8")
    report["template_tokens"] = template_tokens(template, added)
    if not (d / "tokenizer.model").is_file():
        report["kind"] = "bpe"
        return report, None
    report["kind"] = "sentencepiece"
    vocab_size = int((_load(d / "config.json") if (d / "config.json").is_file() else {}).get("vocab_size") or 0)
    decoder = dict(cfg.get("added_tokens_decoder") or {})
    for tok in added:
        key = str(int(tok["id"]))
        if vocab_size and int(tok["id"]) >= vocab_size:
            report["out_of_range"].append(tok["content"])
            continue
        want = _decoder_entry(tok)
        old = decoder.get(key) or {}
        if old.get("content") == want["content"] and bool(old.get("special")) == want["special"]:
            continue
        decoder[key] = want
        report["declared"].append(tok["content"])
    changed = bool(report["declared"])
    if report["declared"]:
        cfg["added_tokens_decoder"] = dict(sorted(decoder.items(), key=lambda kv: int(kv[0])))
    if cfg.get("add_prefix_space") is None and _no_space_after_special(d, added):
        # llama.cpp's SentencePiece tokenizer writes the dummy-prefix space after EVERY special token (GGUF
        # add_space_prefix, default on); this HF tokenizer writes none there, so "<|im_start|>system" would become
        # [<|im_start|>, ▁system] in Ollama and [<|im_start|>, system] in training. The converter turns the GGUF
        # flag off when tokenizer_config.json says add_prefix_space: false (conversion/llama.py). What stays
        # unequal: a prompt whose text starts with plain text (HF writes ▁ there, llama.cpp then does not).
        cfg["add_prefix_space"] = False
        report["add_space_prefix"] = False
        changed = True
    return report, (cfg if changed else None)


def _no_space_after_special(model_dir: Path, added: list[dict]) -> bool:
    """True when the HF tokenizer (as transformers loads it: its Python layer can drop the ▁ that tokenizer.json
    alone would write) puts no SentencePiece ▁ on the text that follows a special token."""
    special = next((t["content"] for t in added if t.get("special") and len(t["content"]) > 2
                    and t["content"] not in ("<s>", "</s>", "<unk>", "<pad>")), None)
    if special is None:
        return False
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as e:  # transformers raises many types; a folder it cannot load is reported, not guessed
        raise ExportError(f"cannot load the tokenizer of {model_dir}: {e.__class__.__name__}: {e}") from None
    pieces = tok.convert_ids_to_tokens(tok(special + "a", add_special_tokens=False)["input_ids"])
    return len(pieces) >= 2 and pieces[0] == special and not pieces[1].startswith("\u2581")


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".kolo-tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def prepare(model_dir: str | os.PathLike) -> dict:
    """Declare the added tokens of ``tokenizer.json`` in ``tokenizer_config.json``'s ``added_tokens_decoder`` (in
    place: for kolo's own folders, e.g. merged/). Idempotent; writes atomically.

    Returns a report: ``kind`` (sentencepiece | bpe | none), ``declared`` (tokens newly written), ``template_tokens``
    (special tokens the chat template uses), ``out_of_range`` (ids the model's vocab_size cannot hold: the
    converter drops them; the model was not resized for them).
    """
    report, cfg = plan(model_dir)
    if cfg is not None:
        _write_json(Path(model_dir) / "tokenizer_config.json", cfg)
    return report


@contextlib.contextmanager
def converter_view(model_dir: str | os.PathLike, scratch: str | os.PathLike) -> Iterator[tuple[Path, dict]]:
    """The folder to hand to the converter: ``model_dir`` itself when nothing needs declaring, else a temporary
    folder under ``scratch`` of links to its files with the prepared tokenizer_config.json -- so a folder kolo
    does not own (the base model of --adapter-only) is never modified. Removed afterwards."""
    report, cfg = plan(model_dir)
    if cfg is None:
        yield Path(model_dir), report
        return
    view = Path(tempfile.mkdtemp(prefix="kolo-convert-view-", dir=scratch))
    try:
        for p in Path(model_dir).iterdir():
            if p.name != "tokenizer_config.json":
                (view / p.name).symlink_to(p.resolve())
        _write_json(view / "tokenizer_config.json", cfg)
        yield view, report
    finally:
        shutil.rmtree(view, ignore_errors=True)
