"""Peak training memory, split the way the Hugging Face guide splits it: weights, adapters, gradients, optimizer
states, activations (https://huggingface.co/docs/transformers/model_memory_anatomy), plus what the runtime itself
holds.

Bytes per parameter, as kolo's hf backend sets training up (train/backends.py, train/trainer.py):
* The base weights are loaded straight in the training dtype (fp32 on CPU; bf16 on a bf16 GPU, else fp16 for
  LoRA / fp32 for full). There is no separate fp32 master copy (the guide's "6 bytes/param" case does not apply).
* Full fine-tune: gradients in the weight dtype; torch AdamW keeps two moments in the parameter's dtype.
* LoRA: peft keeps adapter weights in fp32 (``autocast_adapter_dtype``), so adapters, their gradients and their
  two AdamW moments are 4 + 4 + 8 bytes; modules_to_save are trained copies in the weight dtype.
* QLoRA: NF4 with double quantisation stores 4 + 0.127 bits per quantised weight (QLoRA paper, Dettmers et al.
  2023, section 3: 8/64 + 32/(64*256) bits of constants); peft's ``prepare_model_for_kbit_training`` upcasts the
  rest (embeddings, head, norms) to fp32; paged AdamW 8-bit keeps two 1-byte moments per trainable parameter.
Activations per token and layer follow Korthikanti et al. 2022 ("Reducing activation recomputation", eq. 2) for a
gated (SwiGLU) MLP with SDPA attention, which stores no seq x seq score matrix: the block keeps its norms' inputs
and outputs, q/k/v after RoPE, the attention output, and the MLP's gate/up/act/product (4h + 2q + 2kv + 4I
values), plus the contiguous copy of the attention output that o_proj saves (q). Gradient checkpointing keeps
only each block's input (h values) and recomputes one block at a time. The loss adds the logits in the compute
dtype plus their fp32 upcast and log-softmax (V x (b + 8) bytes per token).
Those are the tensors autograd keeps; the peak also holds the transients of the step being computed (the next
op's output before its input is freed, the attention kernel's workspace, gradient buffers of the backward) and,
on CPU, what glibc's allocator keeps after a free: ACTIVATION_OVERHEAD, measured (not derived) here.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field

from .arch import Arch

#: NF4 + double-quantised constants, bits per weight (QLoRA paper, section 3).
NF4_BITS = 4.127
#: What the CPU training process holds before any weight: python, torch, transformers, peft, tokenizers,
#: sentencepiece, matplotlib, kolo. MEASURED on this project's CPU stack (torch 2.13 CPU, transformers 5.17,
#: peft 0.21; bench/plan_accuracy.py, table in bench/RESULTS.md) -- not a law of nature: re-measure when the stack
#: changes.
RUNTIME_RSS_CPU = 590 * 1024 ** 2
#: The same with CUDA: the CUDA runtime, cuBLAS/cuDNN and the kernels' host-side images. NOT measured here (no
#: GPU); the HF guide quotes 1-2 GB for the kernels alone, so this is a planning figure.
RUNTIME_RSS_CUDA = 3 * 1024 ** 3
#: GPU memory torch's allocator never reports in max_memory_allocated: the CUDA context (HF guide: "1-2GB")
#: and the caching allocator's slack. Added before comparing with the GPU's size, not to the peak itself.
CUDA_CONTEXT = 1024 ** 3
ALLOCATOR_SLACK = 0.10
#: Peak / saved activations of one training step. MEASURED on this project's CPU stack: forward + backward of a
#: 4-layer hidden-256 Llama at batch 2 x 1000 tokens, RSS growth vs the saved-tensor count above: 1.36 (no
#: padding), 1.65 (a padded batch, what kolo's PadCollator gives), 1.30 (LoRA) -> 1.5. Not measured on a GPU.
ACTIVATION_OVERHEAD = 1.5


@dataclass(frozen=True)
class Setup:
    """The run as the trainer will set it up (what the options resolve to on this machine)."""

    method: str  # lora | qlora | full
    device: str  # cpu | cuda
    weight_bytes: int  # bytes per base weight (4 fp32, 2 bf16/fp16)
    compute_bytes: int  # bytes per activation value (2 under bf16/fp16 autocast, else 4)
    gradient_checkpointing: bool
    batch_size: int
    seq_len: int  # longest row of a micro-batch (the data's longest, capped at max_seq_length)
    lora_rank: int
    targets: tuple[str, ...]  # LoRA target leaf names ("all-linear" resolved)
    modules_to_save: tuple[str, ...] = ()
    world: int = 1  # training processes in all (--nproc x --nnodes), one device each
    nproc: int = 1  # of which on this machine
    fsdp: bool = False  # FSDP full_shard: weights, gradients and optimizer states split over the world


@dataclass
class Memory:
    parts: dict[str, int] = field(default_factory=dict)  # weights adapters gradients optimizer activations runtime

    @property
    def peak(self) -> int:
        return sum(self.parts.values())


def lora_params(arch: Arch, s: Setup) -> int:
    """r x (in + out) for each targeted linear of every block (experts count once each)."""
    total = 0
    for name, (a, b) in arch.linear_shapes().items():
        if name in s.targets:
            total += s.lora_rank * (a + b) * (arch.experts if name in ("gate_proj", "up_proj", "down_proj") else 1)
    return total * arch.layers


def saved_params(arch: Arch, s: Setup) -> int:
    """Parameters of the modules_to_save copies (lm_head / embed_tokens: vocab x hidden each)."""
    return sum(arch.vocab * arch.hidden for m in s.modules_to_save if m in ("lm_head", "embed_tokens"))


def trainable_params(arch: Arch, s: Setup) -> int:
    return arch.total_params() if s.method == "full" else lora_params(arch, s) + saved_params(arch, s)


def activations(arch: Arch, s: Setup) -> int:
    tokens = s.batch_size * s.seq_len
    per_layer = 4 * arch.hidden + 3 * arch.q_dim + 2 * arch.kv_dim + 4 * arch.intermediate * arch.experts
    block = tokens * per_layer * s.compute_bytes
    # Checkpointing: each block's input stays, one block is recomputed at a time; without it every block stays.
    stored = tokens * arch.hidden * s.compute_bytes * arch.layers + block if s.gradient_checkpointing \
        else block * arch.layers
    logits = tokens * arch.vocab * (s.compute_bytes + 8)
    return int((stored + logits) * ACTIVATION_OVERHEAD)


def weights(arch: Arch, s: Setup) -> int:
    if s.method == "qlora":
        q = arch.quantizable_params()
        return int(q * NF4_BITS / 8) + (arch.total_params() - q) * 4
    return arch.total_params() * s.weight_bytes


def estimate(arch: Arch, s: Setup) -> Memory:
    """Peak memory of the device the run trains on (GPU allocated bytes, or the process's RSS on CPU)."""
    lora, saved = lora_params(arch, s), saved_params(arch, s)
    m = Memory()
    m.parts["weights"] = weights(arch, s)
    if s.method == "full":
        n, b = arch.total_params(), s.weight_bytes
        m.parts.update(adapters=0, gradients=n * b, optimizer=2 * n * b)
    else:
        moments = 2 if s.method == "qlora" else 8  # 8-bit paged AdamW vs fp32 AdamW, two moments each
        m.parts.update(adapters=lora * 4 + saved * s.weight_bytes, gradients=lora * 4 + saved * s.weight_bytes,
                       optimizer=lora * moments + saved * (2 if s.method == "qlora" else 2 * s.weight_bytes))
    _distributed(arch, s, m)
    m.parts["activations"] = activations(arch, s)
    m.parts["runtime"] = RUNTIME_RSS_CPU if s.device == "cpu" else 0
    return m


def _distributed(arch: Arch, s: Setup, m: Memory) -> None:
    """Per process, with several: DDP keeps a full replica and, by default (``gradient_as_bucket_view=False``), its
    all-reduce buckets are a second copy of the gradients (PyTorch DDP docs: setting it "can reduce peak memory
    usage ... equal to the total gradients size"). FSDP full_shard (ZeRO-3) keeps 1/world of the weights,
    gradients and optimizer states, plus the unit being all-gathered and the one prefetched: two decoder layers of
    full weights (PyTorch FSDP docs, "FSDP ... memory")."""
    if s.world <= 1:
        return
    if not s.fsdp:
        m.parts["ddp_buckets"] = m.parts["gradients"]
        return
    for part in ("weights", "gradients", "optimizer"):
        m.parts[part] = math.ceil(m.parts[part] / s.world)
    m.parts["fsdp_gather"] = 2 * (arch.total_params() // max(1, arch.layers)) * s.weight_bytes


#: The largest weight file transformers writes by default (save_pretrained's max_shard_size "5GB"): loading to a
#: GPU passes one shard at a time through host memory.
SHARD_BYTES = 5 * 10 ** 9


def host_ram(arch: Arch, s: Setup, device_peak: Memory) -> int:
    """Peak RSS of this machine's training processes (one per local rank): everything on CPU; on a GPU the runtime
    plus one weight shard passing through host memory while loading."""
    if s.device == "cpu":
        return device_peak.peak * s.nproc  # every local rank is a process of this machine
    return (RUNTIME_RSS_CUDA + min(SHARD_BYTES, arch.total_params() * s.weight_bytes)) * s.nproc


def gpu_need(peak: int) -> int:
    """GPU memory a run with this allocated peak needs in all."""
    return int(peak * (1 + ALLOCATOR_SLACK)) + CUDA_CONTEXT
