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
    llm = verify._load_llama(f16)
    rows = [json.loads(line)["messages"] for line in open(tiny.example_dataset_path())][:4]
    for msgs in rows:
        ids = verify.hf_prompt_ids(tok, jinja, msgs[:-1])
        gg = llm.tokenize(verify.ollama_prompt_text(tok, jinja, msgs[:-1]).encode(), add_bos=True, special=True)
        assert list(gg) == ids
    hf, margins = verify.hf_greedy(model, ids, {tok.eos_token_id}, tok.pad_token_id, n=16)
    assert verify.gguf_greedy(llm, ids, {tok.eos_token_id}, n=16) == hf
    for q in ("F16", "Q4_K_M"):
        out = verify.gguf_greedy(verify._load_llama(f16 if q == "F16" else q4), ids, set(), n=4)
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
