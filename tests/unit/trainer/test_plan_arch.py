"""kolo_trainer.plan's arithmetic against real models and hand-checked published figures.

Parameter counts: transformers builds the model from the same config (random init, tiny), and the plan's count
from config.json alone must equal ``sum(p.numel())``, for every family rule the plan has (GQA, q/k/v bias, q/k
norms, four norms, tied embeddings). LoRA: peft's own trainable count. Hand-checked: Llama-3.2-1B's published
1,235,814,400 parameters and the 11,272,192 trainable parameters unsloth prints for r=16 on all linear layers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kolo_trainer.plan import arch, disk, memory

LLAMA_32_1B = {"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
               "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 8192, "vocab_size": 128256,
               "tie_word_embeddings": True, "torch_dtype": "bfloat16"}

SMALL = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=120)
FAMILIES = [
    ("llama", "LlamaConfig", dict(num_key_value_heads=2, tie_word_embeddings=False)),
    ("llama-tied-bias", "LlamaConfig", dict(num_key_value_heads=4, tie_word_embeddings=True, attention_bias=True,
                                             mlp_bias=True)),
    ("qwen2", "Qwen2Config", dict(num_key_value_heads=2, tie_word_embeddings=False)),
    ("qwen3", "Qwen3Config", dict(num_key_value_heads=2, head_dim=32, tie_word_embeddings=True)),
    ("gemma2", "Gemma2Config", dict(num_key_value_heads=2, head_dim=16)),
    ("mistral", "MistralConfig", dict(num_key_value_heads=1, tie_word_embeddings=False)),
]


def _setup(a: arch.Arch, method: str = "lora", rank: int = 16, save: tuple = (), **kw) -> memory.Setup:
    base = dict(method=method, device="cpu", weight_bytes=4, compute_bytes=4, gradient_checkpointing=False,
                batch_size=1, seq_len=64, lora_rank=rank, targets=tuple(a.linear_shapes()), modules_to_save=save)
    return memory.Setup(**{**base, **kw})


@pytest.mark.parametrize("name,cls,extra", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_parameter_count_equals_the_real_model(name, cls, extra):
    transformers = pytest.importorskip("transformers")
    import torch

    cfg = getattr(transformers, cls)(**SMALL, **extra)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    real = sum(p.numel() for p in model.parameters())  # tied weights are one Parameter: counted once
    planned = arch.from_config(json.loads(cfg.to_json_string())).total_params()
    assert planned == real, (name, planned, real)


def test_the_tiny_model_on_disk(tiny_model: Path):
    """The tiny demo model as the trainer loads it: config.json alone vs the weights' sum of numel."""
    from transformers import AutoModelForCausalLM

    a, source = arch.load(tiny_model, "models/tiny")
    assert source.endswith("config.json")
    real = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(str(tiny_model)).parameters())
    assert a.total_params() == real


def test_lora_trainable_equals_peft(tiny_model: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from kolo_trainer.train.backends import linear_module_names

    a, _ = arch.load(tiny_model, "models/tiny")
    for save in ((), ("lm_head",)):
        model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
        targets = linear_module_names(model)  # kolo's own "all-linear"
        assert set(targets) == set(a.linear_shapes())
        model = get_peft_model(model, LoraConfig(r=8, target_modules=targets, modules_to_save=list(save) or None))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert memory.trainable_params(a, _setup(a, rank=8, save=save)) == trainable, save


def test_llama_32_1b_hand_checked():
    a = arch.from_config(LLAMA_32_1B)
    # embed 128256*2048 + 16 x (q 2048^2 + k,v 2*2048*512 + o 2048^2 + mlp 3*2048*8192 + norms 2*2048) + norm 2048
    assert a.total_params() == 1_235_814_400
    # r=16 on q,k,v,o,gate,up,down: 16 x (4096 + 2560 + 2560 + 4096 + 3 x 10240) = 704,512 per layer
    assert memory.lora_params(a, _setup(a)) == 11_272_192
    # QLoRA stores the 973M block weights in 4.127 bits and keeps embeddings (tied: once) + norms in fp32
    w = memory.weights(a, _setup(a, method="qlora"))
    assert w == int(973_078_528 * 4.127 / 8) + (1_235_814_400 - 973_078_528) * 4


def test_memory_parts_full_vs_lora_vs_qlora():
    """Bytes per parameter as documented in plan/memory.py: full bf16 = 2 + 2 + 4; LoRA adapters 4 + 4 + 8."""
    a = arch.from_config(LLAMA_32_1B)
    n, lora = a.total_params(), 11_272_192
    full = memory.estimate(a, _setup(a, method="full", device="cuda", weight_bytes=2, compute_bytes=2))
    assert (full.parts["weights"], full.parts["gradients"], full.parts["optimizer"]) == (2 * n, 2 * n, 4 * n)
    lo = memory.estimate(a, _setup(a, device="cuda", weight_bytes=2, compute_bytes=2))
    assert (lo.parts["weights"], lo.parts["adapters"], lo.parts["gradients"], lo.parts["optimizer"]) == \
        (2 * n, 4 * lora, 4 * lora, 8 * lora)
    q = memory.estimate(a, _setup(a, method="qlora", device="cuda", weight_bytes=2, compute_bytes=2))
    assert q.parts["optimizer"] == 2 * lora and q.parts["weights"] < lo.parts["weights"]
    assert full.parts["runtime"] == 0 and memory.estimate(a, _setup(a)).parts["runtime"] > 0


def test_several_processes_ddp_replicas_and_fsdp_shards():
    """Per process: DDP adds its gradient buckets (a second copy of the gradients); FSDP over 4 keeps a quarter of
    weights, gradients and optimizer plus two layers gathered; host RAM counts this machine's processes."""
    a = arch.from_config(LLAMA_32_1B)
    n = a.total_params()
    kw = dict(method="full", device="cuda", weight_bytes=2, compute_bytes=2)
    one = memory.estimate(a, _setup(a, **kw))
    ddp = memory.estimate(a, _setup(a, world=2, nproc=2, **kw))
    assert ddp.parts["ddp_buckets"] == ddp.parts["gradients"] == 2 * n
    assert ddp.peak == one.peak + 2 * n
    fsdp = memory.estimate(a, _setup(a, world=4, nproc=4, fsdp=True, **kw))
    assert (fsdp.parts["weights"], fsdp.parts["gradients"], fsdp.parts["optimizer"]) == (n // 2, n // 2, n)
    assert fsdp.parts["fsdp_gather"] == 2 * (n // 16) * 2 and "ddp_buckets" not in fsdp.parts
    assert fsdp.peak < one.peak
    cpu = _setup(a, method="lora", world=2, nproc=2)
    peak = memory.estimate(a, cpu)
    assert memory.host_ram(a, cpu, peak) == 2 * peak.peak


def test_steps_per_rank_with_several_processes():
    """The DistributedSampler gives each rank ceil(rows / world) rows: the optimizer steps Trainer will run."""
    from types import SimpleNamespace

    from kolo_trainer.train.trainer import steps_plan

    opts = dict(batch_size=4, gradient_accumulation_steps=1, max_steps=0, epochs=2)
    assert steps_plan(34, SimpleNamespace(world_size=1, **opts)) == (9, 18)
    assert steps_plan(34, SimpleNamespace(world_size=2, **opts)) == (5, 10)


def test_activations_scale_and_checkpointing():
    a = arch.from_config(LLAMA_32_1B)
    one = memory.activations(a, _setup(a, batch_size=1, seq_len=1024))
    two = memory.activations(a, _setup(a, batch_size=2, seq_len=1024))
    assert abs(two - 2 * one) <= 1  # linear in tokens (SDPA keeps no seq x seq matrix)
    gc = memory.activations(a, _setup(a, batch_size=1, seq_len=1024, gradient_checkpointing=True))
    logits = 1024 * a.vocab * (4 + 8)
    assert logits * memory.ACTIVATION_OVERHEAD < gc < one
    per_layer = 1024 * (4 * 2048 + 3 * 2048 + 2 * 512 + 4 * 8192) * 4
    assert one == int((16 * per_layer + logits) * memory.ACTIVATION_OVERHEAD)


def test_gguf_sizes_follow_llama_cpp_table():
    """quantize.cpp lists Llama-3-8B (8.03e9 parameters) at 4.58 GiB in Q4_K_M, 7.96 GiB in Q8_0."""
    n = 8_030_261_248
    assert disk.gguf_bytes(n, "Q4_K_M") / 2 ** 30 == pytest.approx(4.58, abs=0.01)
    assert disk.gguf_bytes(n, "Q8_0") / 2 ** 30 == pytest.approx(7.96, abs=0.01)
    assert disk.gguf_bytes(n, "F16") == 2 * n


def test_checkpoint_count_and_disk_parts():
    a = arch.from_config(LLAMA_32_1B)
    s = _setup(a, method="full", device="cuda", weight_bytes=2, compute_bytes=2)
    d = disk.estimate(a, s, total_steps=10, save_steps=4, save_total_limit=2, quantizations=["Q4_K_M"], side=100)
    n = a.total_params()
    assert disk.checkpoint_saves(10, 4) == 3  # steps 4, 8 and the last one
    assert (d.checkpoints, d.checkpoints_kept) == (3, 2)  # the third is written before the oldest goes
    assert d.checkpoint_each == 2 * n + 4 * n + 100 and d.final == 2 * n + 100
    assert d.merged == 0  # a full run converts model/ itself
    assert d.export_bytes == 2 * n + disk.gguf_bytes(n, "Q4_K_M")
    lo = disk.estimate(a, _setup(a), total_steps=10, save_steps=4, save_total_limit=5, quantizations=["Q4_K_M"])
    assert lo.merged == 2 * n and lo.final == 4 * 11_272_192


def test_hub_cache_lookup(tmp_path: Path, monkeypatch):
    snap = tmp_path / "hub" / "models--org--name" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(LLAMA_32_1B))
    (tmp_path / "hub" / "models--org--name" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--name" / "refs" / "main").write_text("abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    a, source = arch.load(None, "org/name")
    assert a is not None and a.total_params() == 1_235_814_400 and source == str(snap / "config.json")
    missing, why = arch.load(None, "org/other")
    assert missing is None and "not in the local Hugging Face cache" in why
