"""What export does with a run's chat template: the Modelfile settings (twin, stops, the no-twin warning, residual
differences) and declaring added special tokens where llama.cpp's converter reads them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from kolo_trainer import templates as T
from kolo_trainer.export import ollama_template, special_tokens


def _ctx(ct: dict, system=None):
    return SimpleNamespace(data={"chat_template": ct, "options": {"max_seq_length": 512}},
                           opts=SimpleNamespace(system=system, num_ctx=None))


def test_settings_with_a_proven_twin_keep_the_full_stop_list_and_residuals():
    ct = T.resolve("llama-3.2", None, "/x", eos_token="<|eot_id|>", date="2026-01-05").manifest()
    s = ollama_template.settings(_ctx(ct))
    assert s["template"] == ct["ollama_template"] and "Today Date: 05 Jan 2026" in s["template"]
    assert s["stop"] == ct["stop"] and "<|eom_id|>" in s["stop"] and s["warning"] is None
    assert s["date"] == "2026-01-05" and any("date" in r for r in s["residual"])
    T.pin_date(None)


def test_settings_without_a_twin_write_no_template_and_no_bare_eos_stop():
    own = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    ct = T.resolve("auto", own, "/x", eos_token="<eos>", emit_warning=False).manifest()
    s = ollama_template.settings(_ctx(ct))
    # A Modelfile stop list replaces Ollama's own: a bare "<eos>" would be shorter than what Ollama uses.
    assert s["template"] is None and s["stop"] == [] and not s["proven"]
    w = s["warning"]
    assert "matches no registry template" in w and "0.24" in w and "{{ .Prompt }}" in w and "ollama-install" in w
    # Which check failed: the nearest entry and where it first differs.
    assert "nearest registry entry" in w and "first difference is test conversation 1" in w
    T.pin_date(None)


def test_a_near_miss_names_its_nearest_entry_and_the_difference():
    """Llama 3.1's template without 'Cutting Knowledge Date': the nearest entry is llama-3.1, and the reason
    points at the preamble."""
    jinja = T.get("llama-3.1").jinja.replace('{{- "Cutting Knowledge Date: December 2023\\n" }}', "")
    r = T.resolve("auto", jinja, "/x", eos_token="<|eot_id|>", emit_warning=False, date="2026-11-30")
    assert not r.proven and "nearest registry entry 'llama-3.1'" in r.unproven_reason
    assert "Today Date" in r.unproven_reason and r.manifest()["unproven_reason"] == r.unproven_reason
    T.pin_date(None)


def test_capabilities_as_ollama_reads_them():
    assert ollama_template.jinja_capabilities(T.get("qwen-3").jinja) == {"tools", "thinking"}
    assert ollama_template.jinja_capabilities(T.get("chatml").jinja) == set()
    assert ollama_template.jinja_capabilities(T.get("deepseek-r1-distill-llama").jinja) >= {"thinking"}
    note = ollama_template.gguf_template_note(T.get("llama-3.1").jinja, T.get("llama-3.1").ollama, False)
    assert note and "OLLAMA_GO_TEMPLATE" in note
    assert ollama_template.gguf_template_note(T.get("gemma-3").jinja, T.get("gemma-3").ollama, False) is None


def _spm_folder(tmp_path, decoder=None, vocab_size=40):
    d = tmp_path / "m"
    d.mkdir()
    (d / "tokenizer.model").write_bytes(b"not read by plan()")
    (d / "config.json").write_text(json.dumps({"vocab_size": vocab_size}))
    (d / "tokenizer.json").write_text(json.dumps({"added_tokens": [
        {"id": 0, "content": "<unk>", "special": True, "lstrip": False, "rstrip": False, "normalized": False,
         "single_word": False},
        {"id": 32, "content": "<|im_start|>", "special": True},
        {"id": 33, "content": "<|im_end|>", "special": True},
        {"id": 45, "content": "<|too_far|>", "special": True}]}))
    # add_prefix_space given: plan() then has no reason to load the (fake) tokenizer to probe the dummy prefix.
    cfg = {"chat_template": T.get("chatml").jinja, "tokenizer_class": "LlamaTokenizer", "add_prefix_space": True}
    if decoder is not None:
        cfg["added_tokens_decoder"] = decoder
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    (d / "model.safetensors").write_bytes(b"weights")
    return d


def test_prepare_declares_added_tokens_for_the_converter(tmp_path):
    d = _spm_folder(tmp_path)
    rep = special_tokens.prepare(d)
    assert rep["kind"] == "sentencepiece" and rep["declared"] == ["<unk>", "<|im_start|>", "<|im_end|>"]
    assert rep["template_tokens"] == ["<|im_start|>", "<|im_end|>"] and rep["out_of_range"] == ["<|too_far|>"]
    dec = json.loads((d / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    assert dec["32"] == {"content": "<|im_start|>", "lstrip": False, "normalized": False, "rstrip": False,
                         "single_word": False, "special": True}
    assert special_tokens.prepare(d)["declared"] == []  # idempotent


def test_converter_view_never_modifies_the_folder(tmp_path):
    d = _spm_folder(tmp_path)
    before = (d / "tokenizer_config.json").read_text()
    with special_tokens.converter_view(d, tmp_path) as (view, rep):
        assert view != d and rep["declared"]
        assert "<|im_start|>" in (view / "tokenizer_config.json").read_text()
        assert (view / "model.safetensors").read_bytes() == b"weights"
    assert not view.exists() and (d / "tokenizer_config.json").read_text() == before
    # Nothing to declare: the folder itself is converted.
    special_tokens.prepare(d)
    with special_tokens.converter_view(d, tmp_path) as (view, rep):
        assert view == d and rep["declared"] == []


def test_bpe_folders_need_nothing(tmp_path):
    d = _spm_folder(tmp_path)
    (d / "tokenizer.model").unlink()
    rep, cfg = special_tokens.plan(d)
    assert rep["kind"] == "bpe" and cfg is None


def test_a_damaged_tokenizer_json_is_a_clear_export_error(tmp_path):
    from kolo_trainer.errors import ExportError

    d = _spm_folder(tmp_path)
    (d / "tokenizer.json").write_text("{not json")
    with pytest.raises(ExportError, match="tokenizer.json"):
        special_tokens.plan(d)
