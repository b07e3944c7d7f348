"""kolo export on tiny models, for real: the llama.cpp converter from the llama-cpp-python sdist, llama.cpp's
quantizer, llama-cpp-python loading and generating, Go's text/template for the Modelfile TEMPLATE.

The run under test is made here, not by `kolo train` (that is the trainer's suite and the demo's job): a tiny
Llama (kolo_trainer.tiny, hidden 256 so k-quants are real) gets a LoRA (attention + MLP, lm_head fully trained via
modules_to_save) trained for a few steps on the bundled example data with the chatml template, so that its greedy
output is a real answer rather than flat logits; then a kolo.json like training writes it.

How the test tokenizer satisfies the converter: tiny.py trains a SentencePiece BPE model (byte fallback, identity
normalisation) and ships it as tokenizer.model with a tokenizer_config.json naming LlamaTokenizer; the converter's
``_set_vocab_sentencepiece`` reads tokenizer.model directly (no BPE pre-tokenizer hash involved), and the chat
special tokens are user-defined symbols, so each is one token in HF and in llama.cpp.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

QUANTS = ["Q4_K_M", "Q8_0", "Q6_K", "Q5_K_M", "Q4_0"]


def _require_export_stack():
    for mod, why in (("torch", "the tiny model"), ("peft", "LoRA merge"), ("llama_cpp", "GGUF load/quantise")):
        try:
            __import__(mod)
        except ImportError:
            pytest.skip(f"{mod} is not installed ({why}); install with `bash scripts/install.sh`")
    from kolo_trainer.export import converter

    try:
        converter.ensure()
    except Exception as e:  # no cached sdist and no network
        pytest.skip(f"the llama.cpp converter is not available: {e}")


def make_run(root: Path, name: str, *, family: str = "llama", steps: int = 40, rows: int = 4,
             modules_to_save: tuple[str, ...] = ("lm_head",), seed: int = 0) -> Path:
    """A finished LoRA run of a tiny model under ``root/outputs/name`` (adapter + tokenizer + kolo.json)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kolo_trainer import manifest, templates, tiny

    base = tiny.build(root / "models" / f"tiny-{family}", family=family)
    (root / "data").mkdir(parents=True, exist_ok=True)
    # The data file holds exactly the rows trained on, so verification's dataset prompts are memorised ones.
    lines = tiny.example_dataset_path().read_text(encoding="utf-8").splitlines()[:rows]
    (root / "data" / "example.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, task_type="CAUSAL_LM", modules_to_save=list(modules_to_save) or None,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, cfg)
    entry = templates.get("chatml")
    convs = [json.loads(line)["messages"] for line in lines]
    seqs, labels = [], []
    for msgs in convs:
        prompt = templates.render(entry.jinja, msgs[:-1], add_generation_prompt=True)
        full = templates.render(entry.jinja, msgs)
        p_ids = [tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
        f_ids = [tok.bos_token_id] + tok(full, add_special_tokens=False)["input_ids"]
        assert f_ids[:len(p_ids)] == p_ids
        seqs.append(f_ids)
        labels.append([-100] * len(p_ids) + f_ids[len(p_ids):])  # the answer (and its <|im_end|>) only
    n = max(map(len, seqs))
    inp = torch.full((len(seqs), n), tok.pad_token_id)
    lab = torch.full((len(seqs), n), -100)
    att = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, (s, y) in enumerate(zip(seqs, labels)):
        inp[i, :len(s)], lab[i, :len(s)], att[i, :len(s)] = torch.tensor(s), torch.tensor(y), 1
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=inp, attention_mask=att, labels=lab).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    run = root / "outputs" / name
    model.save_pretrained(run / "adapter")
    for f in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(base / f, run / "adapter" / f)
    manifest.update(
        run, status="finished", kolo_version="test", method="lora", backend="hf",
        options={"base_model": f"models/tiny-{family}", "train_data": "data/example.jsonl", "max_seq_length": 384,
                 "method": "lora", "chat_template": "chatml"},
        data={"train_file": "data/example.jsonl", "format": "messages"},
        base_model={"id": f"models/tiny-{family}", "revision": None, "local_path": f"models/tiny-{family}"},
        chat_template={"name": "chatml", "jinja": entry.jinja, "ollama_template": entry.ollama,
                       "stop": list(entry.stop), "system": convs[0][0]["content"], "proven": True,
                       "source": "registry", "registry_match": "chatml"},
        train={"final_loss": float(loss.detach())},
    )
    return run


def export(root: Path, *args: str) -> int:
    from kolo_trainer.export import main

    return main.run([*args, "--data-root", str(root)])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One trained tiny run exported to F16 + every quantisation, with verification."""
    _require_export_stack()
    root = tmp_path_factory.mktemp("export") / "kolo_data"
    make_run(root, "run1")
    t0 = time.monotonic()
    rc = export(root, "--output-dir", "run1", *[a for q in QUANTS for a in ("--quantization", q.lower())])
    first_s = time.monotonic() - t0
    assert rc == 0
    return root, root / "outputs" / "run1", first_s


def _export_section(run: Path) -> dict:
    return json.loads((run / "kolo.json").read_text())["export"]


def test_reference_computed_inline_gives_the_background_result(exported):
    """Not started during a conversion (a cached one), verification's HF side runs inline, last: same verdict."""
    from kolo_trainer.export import ollama_template, stages, verify
    from kolo_trainer.options import ExportOptions

    root, run, _ = exported
    data = json.loads((run / "kolo.json").read_text())
    ctx = stages.Context(root=root, run_dir=run, name="run1", opts=ExportOptions(output_dir="run1"), data=data,
                         stages={})
    files = {q: run / "gguf" / f"run1-{q}.gguf" for q in ("F16", "Q4_0")}
    ref = verify.Reference(ctx, run / "merged", None)
    ver = verify.verify_all(ctx, files=files, modelfiles={q: f"gguf/Modelfile.{q}" for q in files}, reference=ref,
                            adapter_gguf=None, settings=ollama_template.settings(ctx))
    assert "reference_in_background" not in ver["timings"] and ver["timings"]["hf_model"] > 0
    assert ver["problems"] == []
    assert ver["greedy"] == data["export"]["verification"]["greedy"]


def test_every_quantisation_is_written_with_the_types_it_names(exported):
    from kolo_trainer.export import quantize

    _, run, _ = exported
    exp = _export_section(run)
    assert exp["status"] == "finished"
    for q in ["F16", *QUANTS]:
        path = run / "gguf" / f"run1-{q}.gguf"
        assert path.is_file(), q
        assert exp["quantizations"][q]["file"] == f"gguf/run1-{q}.gguf"
        types = quantize.tensor_types(path)
        assert exp["quantizations"][q]["fallbacks"] == [], (q, exp["quantizations"][q])
        big = {name: t for name, t, nd in types if nd == 2 and name.startswith("blk.")
               and name.split(".")[2] in ("attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up")}
        assert len(big) == 2 * 5
        want = {"F16": "F16", "Q8_0": "Q8_0", "Q6_K": "Q6_K", "Q5_K_M": "Q5_K", "Q4_K_M": "Q4_K", "Q4_0": "Q4_0"}[q]
        # The big matrices really are the named type (not a silent q5_0/q8_0 fallback).
        assert set(big.values()) == {want}, (q, big)
    # Sizes shrink with the bits.
    sizes = {q: exp["quantizations"][q]["bytes"] for q in ["F16", *QUANTS]}
    assert sizes["F16"] > sizes["Q8_0"] > sizes["Q6_K"] > sizes["Q5_K_M"] > sizes["Q4_K_M"]
    assert not list((run / "gguf").glob(".tmp-*"))


def test_modelfile_content_exactly(exported):
    from kolo_trainer import templates

    _, run, _ = exported
    system = json.loads((run / "kolo.json").read_text())["chat_template"]["system"]
    text = (run / "gguf" / "Modelfile.Q4_K_M").read_text()
    expected = (
        "# Written by `kolo export`. Create the Ollama model from this folder with:\n"
        "#   ollama create run1:q4_k_m -f Modelfile.Q4_K_M\n"
        "FROM ./run1-Q4_K_M.gguf\n"
        f'TEMPLATE """{templates.get("chatml").ollama}"""\n'
        f'SYSTEM """{system}"""\n'
        'PARAMETER stop "<|im_end|>"\n'
        'PARAMETER stop "<|im_start|>"\n'
        "PARAMETER num_ctx 384\n"
        "PARAMETER temperature 0.7\n"
        "PARAMETER top_p 0.9\n"
    )
    assert text == expected
    assert (run / "gguf" / "Modelfile.F16").read_text() == expected.replace("Q4_K_M", "F16").replace("q4_k_m", "f16")


def test_verification_passes_with_token_and_greedy_parity(exported):
    _, run, _ = exported
    ver = _export_section(run)["verification"]
    assert ver["problems"] == []
    assert ver["tokens"]["source"] == "training data"
    assert ver["tokens"]["prompts"] == 4 and ver["tokens"]["equal"] == 4
    from kolo_trainer.export import verify

    n = verify.N_GREEDY  # conversations checked token by token over their reply (teacher forcing)
    assert n >= 2 and ver["greedy"]["prompts"] == n and ver["greedy"]["equal"] == n
    for r in ver["greedy"]["results"]:
        assert r["hf"] == r["gguf"]
        assert len(r["hf"]) >= 4, "the trained model should answer with more than an end-of-turn token"
    assert all(v["ok"] for v in ver["load"].values()) and set(ver["load"]) == {"F16", *QUANTS}
    # The HF side was computed during the F16 conversion (a fresh export converts), not after it.
    assert ver["timings"]["reference_in_background"] > 0 and ver["timings"]["hf_model"] < 0.5
    from kolo_trainer.templates import gorender

    if gorender.available():
        assert ver["template"]["status"] == "passed" and ver["template"]["conversations"] > 20
        assert ver["status"] == "passed"
    else:
        assert ver["template"]["status"] == "skipped: go not installed"


def test_greedy_answer_is_the_memorised_one_and_hf_agrees_independently(exported):
    """Recompute parity here (not trusting the manifest): HF merged model vs the F16 GGUF on a dataset prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kolo_trainer import templates
    from kolo_trainer.export import verify

    root, run, _ = exported
    tok = AutoTokenizer.from_pretrained(run / "merged")
    model = AutoModelForCausalLM.from_pretrained(run / "merged", dtype=torch.float32)
    msgs = [json.loads(line)["messages"] for line in open(root / "data" / "example.jsonl")][1]
    jinja = templates.get("chatml").jinja
    ids = verify.hf_prompt_ids(tok, jinja, msgs[:-1])
    llm = verify.load_llama(run / "gguf" / "run1-F16.gguf")
    assert list(llm.tokenize(verify.ollama_prompt_text(tok, jinja, msgs[:-1]).encode(), add_bos=True,
                             special=True)) == ids
    stops = {tok.eos_token_id}
    hf, _ = verify.hf_greedy(model, ids, stops, tok.pad_token_id, n=24)
    gg = verify.gguf_greedy(llm, ids, stops, n=24)
    assert hf == gg
    answer = tok.decode(hf, skip_special_tokens=True)
    # 40 steps on 4 rows: the tiny model has memorised its answers (so parity was checked on a peaked, real
    # answer, not on flat logits).
    want = msgs[-1]["content"]
    assert answer.split()[:5] == want.split()[:5], (answer, want)


def test_merge_equals_the_unmerged_adapter(exported):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    root, run, _ = exported
    base = AutoModelForCausalLM.from_pretrained(root / "models" / "tiny-llama", dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, run / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(run / "merged", dtype=torch.float32).eval()
    x = torch.tensor([[1, 8, 350, 679, 389, 723, 29, 735, 100, 200]])
    with torch.no_grad():
        a, b = peft_model(x).logits, merged(x).logits
    # merged/ is stored in f16: equal up to f16 rounding of the weights.
    assert torch.allclose(a, b, atol=5e-2, rtol=0), float((a - b).abs().max())
    assert a.argmax(-1).tolist() == b.argmax(-1).tolist()


def test_rerun_skips_every_stage_and_force_redoes(exported, capsys):
    root, run, first_s = exported
    before = {p.name: p.stat().st_mtime_ns for p in (run / "gguf").iterdir()}
    capsys.readouterr()
    t0 = time.monotonic()
    assert export(root, "--output-dir", "run1", *[a for q in QUANTS for a in ("--quantization", q)]) == 0
    again_s = time.monotonic() - t0
    out = capsys.readouterr().out
    events = [json.loads(line[7:]) for line in out.splitlines() if line.startswith("@@kolo ")]
    status = {(e["stage"], e["status"]) for e in events if e["event"] == "stage"}
    assert ("merge", "skip") in status and ("convert", "skip") in status and ("verify", "skip") in status
    assert not any(e["stage"] in ("convert", "quantize", "merge") and e["status"] == "done"
                   for e in events if e["event"] == "stage")
    assert {p.name: p.stat().st_mtime_ns for p in (run / "gguf").iterdir()} == before
    assert again_s < first_s / 3, (again_s, first_s)
    # A changed input (the adapter) makes merge, convert and quantise run again.
    cfg = run / "adapter" / "adapter_model.safetensors"
    os.utime(cfg, ns=(cfg.stat().st_atime_ns, cfg.stat().st_mtime_ns + 1_000_000_000))
    assert export(root, "--output-dir", "run1", "--quantization", "Q4_K_M", "--no-verify") == 0
    events = [json.loads(line[7:]) for line in capsys.readouterr().out.splitlines() if line.startswith("@@kolo ")]
    done = [e["stage"] for e in events if e["event"] == "stage" and e["status"] == "done"]
    assert "merge" in done and "convert" in done and "quantize" in done


def test_sigkill_mid_conversion_leaves_no_partial_file_and_rerun_completes(tmp_path):
    """A bigger (40 MB F16) fully fine-tuned tiny model, so the F16 write lasts long enough to be caught."""
    _require_export_stack()
    from kolo_trainer import manifest, templates, tiny

    root = tmp_path / "kolo_data"
    run = root / "outputs" / "big"
    tiny.build(run / "model", hidden_size=512, num_layers=8)
    entry = templates.get("chatml")
    (root / "data").mkdir(parents=True)
    shutil.copy(tiny.example_dataset_path(), root / "data" / "example.jsonl")
    manifest.update(run, status="finished", method="full", options={"max_seq_length": 256, "method": "full",
                    "train_data": "data/example.jsonl"}, data={"train_file": "data/example.jsonl"},
                    chat_template={"name": "chatml", "jinja": entry.jinja, "ollama_template": entry.ollama,
                                   "stop": list(entry.stop), "system": None, "proven": True})
    gguf = run / "gguf"
    cmd = [sys.executable, "-m", "kolo_trainer", "export", "--output-dir", "big", "--quantization", "Q4_K_M",
           "--data-root", str(root)]
    killed_at = None
    for attempt in range(3):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            tmp = [p for p in gguf.glob(".tmp-*convert-F16.gguf")] if gguf.exists() else []
            if tmp and tmp[0].stat().st_size > 0:
                os.killpg(proc.pid, signal.SIGKILL)  # the export and its converter subprocess, mid-write
                killed_at = tmp[0].stat().st_size
                break
            time.sleep(0.002)
        proc.wait()
        if killed_at:
            break
        shutil.rmtree(gguf, ignore_errors=True)
        manifest.update(run, export={"stages": {}})
    assert killed_at, "never caught the F16 file being written"
    finals = [p.name for p in gguf.iterdir() if not p.name.startswith(".tmp-")]
    assert finals == [], f"a final name exists after SIGKILL mid-write: {finals}"
    assert list(gguf.glob(".tmp-*")), "the partial file should be left under its temporary name"
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "removed the leftover of an interrupted export" in r.stdout
    assert not list(gguf.glob(".tmp-*"))
    exp = _export_section(run)
    assert exp["status"] == "finished"
    assert exp["verification"]["tokens"]["equal"] == exp["verification"]["tokens"]["prompts"] > 0
    # An untrained model's logits are nearly flat: a greedy difference at a near-tie is verification's warning,
    # any other is its problem (and the status says "failed").
    assert exp["verification"]["greedy"]["prompts"] > 0 and exp["verification"]["problems"] == []
    assert exp["verification"]["status"] in ("passed", "passed with warnings")
    assert {p.name for p in gguf.iterdir()} == {"big-F16.gguf", "big-Q4_K_M.gguf", "Modelfile.F16",
                                                "Modelfile.Q4_K_M"}


def test_small_hidden_size_fallbacks_are_reported(tmp_path, capsys):
    """hidden 64 cannot take k-quants: llama.cpp silently falls back, and kolo must say so."""
    _require_export_stack()
    from kolo_trainer import manifest, tiny

    root = tmp_path / "kolo_data"
    run = root / "outputs" / "small"
    tiny.build(run / "model", hidden_size=64, num_layers=1)
    manifest.update(run, status="finished", method="full", options={"max_seq_length": 128})
    assert export(root, "--output-dir", "small", "--quantization", "Q4_K_M", "--no-verify") == 0
    q = _export_section(run)["quantizations"]["Q4_K_M"]
    assert q["fallbacks"], q
    assert all(f["expected"] == "Q4_K" and f["type"] not in ("Q4_K", "Q5_K", "Q6_K") for f in q["fallbacks"])
    assert "fell back" in capsys.readouterr().out
    # No TEMPLATE could be proven (no chat template in this manifest): the Modelfile says so loudly.
    mf = (run / "gguf" / "Modelfile.Q4_K_M").read_text()
    from kolo_trainer.export import modelfile

    assert modelfile.parse(mf).template is None
    assert "# WARNING: chat template" in mf and "no Ollama TEMPLATE could be proven equal" in mf


def test_unfinished_or_missing_runs_are_refused(tmp_path):
    from kolo_trainer import manifest
    from kolo_trainer.errors import ExportError, NameError_

    root = tmp_path / "kolo_data"
    (root / "outputs").mkdir(parents=True)
    with pytest.raises(NameError_, match="no run 'nope'"):
        export(root, "--output-dir", "nope")
    manifest.update(root / "outputs" / "half", status="interrupted", method="lora")
    with pytest.raises(ExportError, match="its training did not finish"):
        export(root, "--output-dir", "half")


# ------------------------------------------------------------------------------------------------ the kolo CLI


def _kolo(root: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    import shutil as _sh

    exe = _sh.which("kolo", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the kolo console script is not installed in this environment")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOLO_")}
    env.update(NO_COLOR="1", TERM="dumb", COLUMNS="200")
    return subprocess.run([exe, "--runtime", "local", "--data-root", str(root), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def test_kolo_chat_answers_through_the_modelfile(exported):
    root, run, _ = exported
    first = json.loads((root / "data" / "example.jsonl").read_text().splitlines()[0])["messages"]
    assert first[1]["content"] == "What is kolo?"
    r = _kolo(root, "chat", "run1", "--prompt", "What is kolo?", "--temperature", "0", "--quantization", "f16")
    assert r.returncode == 0, r.stderr
    # The SYSTEM line of the Modelfile + the template reproduce the training prompt: the memorised answer comes
    # back, and generation stopped at <|im_end|> (nothing after it, no template tokens printed).
    assert r.stdout.strip() == first[2]["content"]


def test_kolo_export_cli_rerun_bad_quant_and_missing_run(exported):
    root, run, _ = exported
    r = _kolo(root, "export", "run1", "--quantization", "q4_k_m")
    assert r.returncode == 0, r.stderr
    assert "verification: passed" in r.stdout or "verification: passed with warnings" in r.stdout
    r = _kolo(root, "export", "run1", "--quantization", "Q3_K_S")
    assert r.returncode == 2 and "unknown quantization 'Q3_K_S'" in r.stderr and "Traceback" not in r.stderr
    r = _kolo(root, "export", "no-such-run")
    assert r.returncode == 2 and "no run 'no-such-run'" in r.stderr
    r = _kolo(root, "export", "run1", "--dry-run", "--quantization", "Q8_0", "--system", "it's \"quoted\"; ok")
    assert r.returncode == 0
    import shlex

    argv = shlex.split(r.stdout.strip())
    assert argv[1:4] == ["-m", "kolo_trainer", "export"]
    assert "--system=it's \"quoted\"; ok" in argv
    assert "--output-dir=run1" in argv and argv[-2:] == ["--data-root", str(root.resolve())]
