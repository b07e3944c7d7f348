"""Export paths beyond the merged Llama: another architecture (qwen2), and --adapter-only (GGUF LoRA + base).

qwen2: the converter's Qwen2Model.set_vocab tries ``_set_vocab_sentencepiece`` first, so the tiny SentencePiece
tokenizer.model converts as a llama-style SPM vocabulary. On the HF side transformers 5 maps model_type qwen2 to
Qwen2Tokenizer whatever tokenizer_config.json says, and that class rebuilds the vocabulary as a byte-level BPE that
drops spaces; the HF reference here is therefore LlamaTokenizer (the class tokenizer_config.json names), loaded
explicitly. That is a limit of the *tiny* qwen2 model only: real Qwen2 checkpoints ship a tokenizer.json.
"""

from __future__ import annotations

import json

import pytest

from test_export import _export_section, _require_export_stack, export, make_run

pytestmark = pytest.mark.e2e


def test_qwen2_converts_quantises_and_matches_hf(tmp_path):
    _require_export_stack()
    import torch
    from transformers import AutoModelForCausalLM, LlamaTokenizer

    from kolo_trainer import templates, tiny
    from kolo_trainer.export import convert, quantize, verify

    model_dir = tiny.build(tmp_path / "tiny-qwen2", family="qwen2")
    assert json.loads((model_dir / "config.json").read_text())["model_type"] == "qwen2"
    f16 = tmp_path / "q-F16.gguf"
    convert.to_gguf(model_dir, f16, "f16")
    q4 = tmp_path / "q-Q4_K_M.gguf"
    quantize.quantize(f16, q4, "Q4_K_M")
    rep = quantize.report(q4, "Q4_K_M")
    assert rep["fallbacks"] == []
    types = {n: t for n, t, nd in quantize.tensor_types(q4) if nd == 2}
    assert {types[f"blk.{b}.{m}.weight"] for b in (0, 1) for m in ("attn_q", "attn_k", "ffn_gate", "ffn_up")} \
        == {"Q4_K"}
    # qwen2 has q/k/v biases: they stay 1-D f32 and exist in the GGUF (the architecture really is qwen2).
    assert any(n.endswith("attn_q.bias") for n, _, _ in quantize.tensor_types(f16))

    tok = LlamaTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    model.half().float()  # the very weights the F16 GGUF holds
    jinja = templates.get("chatml").jinja
    llm = verify.load_llama(f16)
    rows = [json.loads(line)["messages"] for line in open(tiny.example_dataset_path())][:4]
    for msgs in rows:
        ids = verify.hf_prompt_ids(tok, jinja, msgs[:-1])
        gg = llm.tokenize(verify.ollama_prompt_text(tok, jinja, msgs[:-1]).encode(), add_bos=True, special=True)
        assert list(gg) == ids
    hf, margins = verify.hf_greedy(model, ids, {tok.eos_token_id}, tok.pad_token_id, n=16)
    assert verify.gguf_greedy(llm, ids, {tok.eos_token_id}, n=16) == hf
    for q in ("F16", "Q4_K_M"):
        out = verify.gguf_greedy(verify.load_llama(f16 if q == "F16" else q4), ids, set(), n=4)
        assert len(out) == 4


@pytest.fixture(scope="module")
def adapter_run(tmp_path_factory):
    _require_export_stack()
    root = tmp_path_factory.mktemp("adapter") / "kolo_data"
    # No modules_to_save: a GGUF LoRA can only hold lora_A/lora_B pairs.
    make_run(root, "lora1", modules_to_save=(), steps=20)
    return root, root / "outputs" / "lora1"


def test_adapter_only_writes_base_plus_adapter_and_verifies(adapter_run):
    root, run = adapter_run
    assert export(root, "--output-dir", "lora1", "--adapter-only", "--quantization", "Q4_K_M") == 0
    names = {p.name for p in (run / "gguf").iterdir()}
    assert names == {"lora1-base-F16.gguf", "lora1-base-Q4_K_M.gguf", "lora1-lora-F16.gguf", "Modelfile.F16",
                     "Modelfile.Q4_K_M"}
    assert not (run / "merged").exists()
    mf = (run / "gguf" / "Modelfile.Q4_K_M").read_text().splitlines()
    assert mf[2:4] == ["FROM ./lora1-base-Q4_K_M.gguf", "ADAPTER ./lora1-lora-F16.gguf"]
    from kolo_trainer.export import quantize

    assert {t for n, t, nd in quantize.tensor_types(run / "gguf" / "lora1-lora-F16.gguf") if nd == 2} == {"F16"}
    ver = _export_section(run)["verification"]
    assert ver["problems"] == [], ver["problems"]
    # HF base + PEFT adapter (unmerged) vs llama.cpp base F16 + GGUF LoRA: same prompt ids, same greedy tokens.
    assert ver["tokens"]["equal"] == ver["tokens"]["prompts"] == 4
    assert ver["greedy"]["equal"] == ver["greedy"]["prompts"] == 3
    assert all(len(r["hf"]) >= 2 for r in ver["greedy"]["results"])


def test_adapter_only_refuses_modules_to_save(tmp_path):
    _require_export_stack()
    from kolo_trainer.errors import OptionsError

    root = tmp_path / "kolo_data"
    make_run(root, "full_head", steps=1, rows=1)
    with pytest.raises(OptionsError, match="modules_to_save"):
        export(root, "--output-dir", "full_head", "--adapter-only")
    assert not (root / "outputs" / "full_head" / "gguf").exists()


# --- real instruct formats, end to end: `kolo train --chat-template auto` then `kolo export` -------------------

REAL = {
    "llama-3.2": "a date preamble (strftime_now, pinned in training)",
    "gemma-3": "Gemma: system prompt folded into the first user turn, contents trimmed",
    "qwen-3": "a thinking model (past <think> blocks dropped; Ollama thinking capability)",
}

MULTI_TURN = {"messages": [
    {"role": "system", "content": "You are Kolo, a concise assistant."},
    {"role": "user", "content": "What is kolo?"},
    {"role": "assistant", "content": "A tool that fine-tunes models."},
    {"role": "user", "content": "Does it run offline?"},
    {"role": "assistant", "content": "Yes, entirely on your machine."}]}


def _data(root):
    from kolo_trainer import tiny

    (root / "data").mkdir(parents=True, exist_ok=True)
    lines = tiny.example_dataset_path().read_text(encoding="utf-8").splitlines()[:3]
    (root / "data" / "chats.jsonl").write_text("\n".join(lines + [json.dumps(MULTI_TURN)]) + "\n", encoding="utf-8")


def _train_and_export(kolo, model: str, run: str) -> dict:
    r = kolo("--runtime", "local", "train", "--base-model", model, "--train-data", "data/chats.jsonl",
             "--chat-template", "auto", "--max-steps", "3", "--batch-size", "2", "--output-dir", run, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    r = kolo("--runtime", "local", "export", run, "--quantization", "Q4_K_M", timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return json.loads((kolo.data_root / "outputs" / run / "kolo.json").read_text(encoding="utf-8"))


def _check_exported(data: dict, run_dir, entry_name: str) -> dict:
    from kolo_trainer import templates
    from kolo_trainer.export import modelfile

    ct = data["chat_template"]
    entry = templates.get(entry_name)
    assert ct["source"] == "model" and ct["registry_match"] == entry_name and ct["proven"]
    mf = modelfile.parse((run_dir / "gguf" / "Modelfile.Q4_K_M").read_text(encoding="utf-8"))
    # The twin TEMPLATE, with the run's pinned date written literally, and the family's full stop list.
    assert mf.template == entry.ollama_for(ct["date"])
    assert set(entry.stop) <= set(mf.parameters["stop"])
    ver = data["export"]["verification"]
    assert ver["status"] in ("passed", "passed with warnings"), ver["problems"]
    assert ver["tokens"]["equal"] == ver["tokens"]["prompts"] >= 1
    assert ver["template"]["status"] == "passed" and ver["template"]["conversations"] > 10
    return ver


@pytest.mark.parametrize("name", sorted(REAL), ids=[f"{n}: {REAL[n]}" for n in sorted(REAL)])
def test_real_template_round_trips(name, kolo, data_root):
    """A tiny model carrying the vendor's real template and special tokens: auto finds the twin by rendering,
    training masks every reply (the two-exchange row included), export writes the twin and verifies it with
    token parity and the Go renderer."""
    _require_export_stack()
    from kolo_trainer import tiny

    tiny.build(data_root / "models" / f"tiny-{name}", template=name)
    _data(data_root)
    data = _train_and_export(kolo, f"models/tiny-{name}", f"r-{name}")
    ver = _check_exported(data, data_root / "outputs" / f"r-{name}", name)
    if name == "llama-3.2":
        from datetime import datetime

        day = datetime.strptime(data["chat_template"]["date"], "%Y-%m-%d").strftime("%d %b %Y")
        mf = (data_root / "outputs" / f"r-{name}" / "gguf" / "Modelfile.F16").read_text(encoding="utf-8")
        assert f"Today Date: {day}" in mf and any("date" in x for x in ver["residual"])
    if name == "gemma-3":
        assert any("whitespace" in x for x in ver["residual"])
    if name == "qwen-3":  # current Ollama would prefer the GGUF's Jinja (it advertises tools): listed, not hidden
        assert any("current Ollama renders the GGUF's own Jinja" in x for x in ver["residual"])


def _spm_with_added_chatml(out):
    """A SentencePiece tokenizer WITHOUT ChatML pieces, with <|im_start|>/<|im_end|> added on top by transformers
    and saved the transformers-5 way (tokenizer.json + extra special tokens, no added_tokens_decoder): the
    "Llama-2/Mistral base + ChatML" recipe."""
    import io

    import sentencepiece as spm
    from transformers import AutoTokenizer

    from kolo_trainer import templates, tiny

    out.mkdir(parents=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tiny._corpus(None)), model_writer=buf, model_type="bpe", vocab_size=800,
        hard_vocab_limit=False, byte_fallback=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=True, allow_whitespace_only_pieces=True, split_digits=True,
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=3, unk_piece="<unk>", bos_piece="<s>",
        eos_piece="</s>", pad_piece="<pad>", num_threads=1, minloglevel=2)
    (out / "tokenizer.model").write_bytes(buf.getvalue())
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": "<pad>", "add_bos_token": True, "add_eos_token": False, "legacy": True,
        "clean_up_tokenization_spaces": False, "chat_template": templates.get("chatml").jinja}))
    tok = AutoTokenizer.from_pretrained(str(out))
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "eos_token": "<|im_end|>"})
    tok.save_pretrained(str(out))  # tokenizer.json + a new tokenizer_config.json; tokenizer.model stays
    assert (out / "tokenizer.model").is_file() and (out / "tokenizer.json").is_file()
    return tok


def test_spm_model_with_added_chatml_tokens_exports_with_token_parity(kolo, data_root):
    """Before conversion kolo declares the added tokens where llama.cpp's converter reads them
    (export/special_tokens.py), so the GGUF keeps <|im_start|> as one control token: token parity holds."""
    _require_export_stack()
    from kolo_trainer import tiny
    from kolo_trainer.export import special_tokens

    model = data_root / "models" / "spm-chatml"
    tok = _spm_with_added_chatml(model)
    assert len(tok("<|im_start|>", add_special_tokens=False)["input_ids"]) == 1
    cfg = json.loads((model / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert "<|im_start|>" not in json.dumps(cfg.get("added_tokens_decoder") or {})  # what the converter would miss
    assert {"<|im_start|>", "<|im_end|>"} <= set(special_tokens.plan(model)[0]["declared"])
    tiny.build_model(model)
    _data(data_root)
    data = _train_and_export(kolo, "models/spm-chatml", "r-spm")
    ver = _check_exported(data, data_root / "outputs" / "r-spm", "chatml")
    assert ver["greedy"]["prompts"] >= 1
    # The user's base model folder is never modified (the converter reads a temporary view of it).
    assert json.loads((model / "tokenizer_config.json").read_text(encoding="utf-8")) == cfg
