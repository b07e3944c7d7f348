"""The one definition of every kolo option (training, export and chat).

Each field is declared once: type, default, help text, constraints. The CLI flags (host and trainer), the YAML
config keys, the argv sent into the container and the manifest are all derived from these models by ``spec``.
Paths (``train_data``, ``eval_data``, ``output_dir``, a local ``base_model``) are names *relative to the data root*
(``/var/kolo_data`` in the container, ``--data-root`` locally) and are checked by ``names``.
"""

from __future__ import annotations

from typing import Annotated, Callable, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from . import names

#: Quantisations kolo can produce. F16/BF16 are the converter's output as-is; the rest go through llama.cpp's
#: quantizer. Names are case-insensitive on input and normalised to these spellings.
QUANTIZATIONS = ("F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0")

from .data.formats import FORMATS as DATA_FORMATS  # noqa: E402  (the one table: kolo_trainer.data.formats)


def _normalise_quant(values: list[str]) -> list[str]:
    out, bad = [], []
    for v in values:
        q = str(v).strip().upper()
        if q not in QUANTIZATIONS:
            bad.append(str(v))
        elif q not in out:
            out.append(q)
    if bad:
        raise ValueError(f"unknown quantization {', '.join(map(repr, bad))}; choose from {', '.join(QUANTIZATIONS)}")
    return out


def _checked(check: Callable[[str], None]) -> AfterValidator:
    """A names.check_* function as a pydantic validator (the value comes back unchanged)."""
    def run(value: str) -> str:
        check(value)
        return value
    return AfterValidator(run)


# The option types every option model shares: one validator each, here (spec.describe sees the plain type).
RunName = Annotated[str, _checked(names.check_run_name)]  # a run folder under outputs/ (also a RAG index name)
RelPath = Annotated[str, _checked(names.check_relative)]  # a file or folder relative to the data root
Quantizations = Annotated[list[str], AfterValidator(_normalise_quant)]  # GGUF types, normalised, no repeats


def quantization(value: str) -> str:
    """One quantisation name, normalised (``q4_k_m`` -> ``Q4_K_M``); for verbs that take a single one
    (ollama-install, lmstudio-install). Raises OptionsError (exit 2) with the same wording as the option models."""
    from .errors import OptionsError

    try:
        return _normalise_quant([value])[0]
    except ValueError as e:
        raise OptionsError([f"--quantization: {e}"]) from None


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class TrainOptions(_Options):
    """Options of ``kolo train`` / ``python -m kolo_trainer train``."""

    # --- data
    train_data: RelPath = Field("data/data.jsonl", description="Training file, relative to the data root "
                            "(JSONL, JSON or CSV; see `kolo data check`).", json_schema_extra={"group": "data"})
    data_format: Literal[DATA_FORMATS] = Field(  # type: ignore[valid-type]
        "auto", description="Input format; auto detects it from the first rows.", json_schema_extra={"group": "data"})
    eval_data: Optional[RelPath] = Field(None, description="Separate evaluation file, relative to the data root.",
                                     json_schema_extra={"group": "data"})
    eval_split: float = Field(0.0, ge=0.0, lt=0.5, description="Fraction of the training rows held out for eval "
                              "loss (e.g. 0.05). 0 = none.", json_schema_extra={"group": "data"})
    skip_invalid: bool = Field(False, description="Train on the valid rows and report the dropped ones, instead of "
                               "stopping at the first bad file.", json_schema_extra={"group": "data"})
    max_seq_length: int = Field(1024, ge=16, le=1_048_576, description="Longest training sequence in tokens; "
                                "longer rows are truncated (and counted).", json_schema_extra={"group": "data"})
    train_on_inputs: bool = Field(False, description="Compute the loss on prompts too (default: assistant turns "
                                  "only).", json_schema_extra={"group": "data"})
    packing: bool = Field(False, description="Pack several short rows into one sequence.",
                          json_schema_extra={"group": "data"})

    # --- model
    base_model: str = Field("unsloth/Llama-3.2-1B-Instruct", description="Hugging Face model id, or a model "
                            "folder relative to the data root (e.g. models/tiny).", json_schema_extra={"group": "model"})
    chat_template: str = Field("auto", description="auto (the base model's own, matched to its Ollama twin by "
                               "rendering), a registry name (a family such as llama-3.2, qwen-2.5, gemma-3, "
                               "mistral-v0.3, or generic chatml / alpaca) or a .jinja file relative to the data root.",
                               json_schema_extra={"group": "model"})
    method: Literal["lora", "qlora", "full"] = Field("lora", description="lora, qlora (4-bit, CUDA only) or full "
                                                      "fine-tune.", json_schema_extra={"group": "model"})
    backend: Literal["auto", "unsloth", "hf"] = Field("auto", description="auto picks unsloth on CUDA when it "
                                                       "imports, else hf (transformers + peft).",
                                                       json_schema_extra={"group": "model"})
    lora_rank: int = Field(16, ge=1, le=4096, description="LoRA rank r.", json_schema_extra={"group": "lora"})
    lora_alpha: int = Field(16, ge=1, description="LoRA alpha.", json_schema_extra={"group": "lora"})
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout.", json_schema_extra={"group": "lora"})
    use_rslora: bool = Field(False, description="Rank-stabilised LoRA scaling.", json_schema_extra={"group": "lora"})
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"], description="Modules to adapt "
                                      "(repeatable); all-linear = every linear layer but the output head.",
                                      json_schema_extra={"group": "lora"})
    modules_to_save: list[str] = Field(default_factory=list, description="Modules trained in full next to LoRA "
                                       "(repeatable), e.g. lm_head.", json_schema_extra={"group": "lora"})

    # --- schedule
    epochs: int = Field(3, ge=1, le=10_000, description="Passes over the training data.",
                        json_schema_extra={"group": "schedule"})
    max_steps: int = Field(-1, ge=-1, description="Stop after this many optimizer steps (-1 = use epochs).",
                           json_schema_extra={"group": "schedule"})
    learning_rate: float = Field(1e-4, gt=0.0, le=1.0, description="Peak learning rate.",
                                 json_schema_extra={"group": "schedule"})
    batch_size: int = Field(2, ge=1, le=4096, description="Rows per device batch.",
                            json_schema_extra={"group": "schedule"})
    gradient_accumulation_steps: int = Field(1, ge=1, description="Batches per optimizer step.",
                                             json_schema_extra={"group": "schedule"})
    warmup_steps: int = Field(10, ge=0, description="Linear warm-up steps.", json_schema_extra={"group": "schedule"})
    scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts",
                            "polynomial"] = Field("linear", description="Learning-rate schedule.",
                                                  json_schema_extra={"group": "schedule"})
    weight_decay: float = Field(0.0, ge=0.0, le=10.0, description="AdamW weight decay (0 is a value, not unset).",
                                json_schema_extra={"group": "schedule"})
    seed: int = Field(1337, ge=0, description="Random seed.", json_schema_extra={"group": "schedule"})
    early_stopping_patience: Optional[int] = Field(None, ge=1, description="Stop when eval loss has not improved "
                                                   "for this many evaluations (needs eval data).",
                                                   json_schema_extra={"group": "schedule"})
    eval_steps: Optional[int] = Field(None, ge=1, description="Evaluate every N steps (default: with save_steps, "
                                      "or once per epoch).", json_schema_extra={"group": "schedule"})
    logging_steps: int = Field(1, ge=1, description="Log loss every N optimizer steps.",
                               json_schema_extra={"group": "schedule"})
    gradient_checkpointing: Optional[bool] = Field(None, description="Trade compute for memory (default: on with "
                                                   "CUDA, off on CPU).", json_schema_extra={"group": "schedule"})
    bf16: Optional[bool] = Field(None, description="bf16 training (default: on when the GPU supports it, off on "
                                 "CPU).", json_schema_extra={"group": "schedule"})

    # --- outputs
    output_dir: RunName = Field("model", description="Run folder name under <data root>/outputs/.",
                            json_schema_extra={"group": "output"})
    save_steps: int = Field(500, ge=1, description="Checkpoint every N optimizer steps.",
                            json_schema_extra={"group": "output"})
    save_total_limit: int = Field(5, ge=1, description="Checkpoints kept.", json_schema_extra={"group": "output"})
    resume: bool = Field(False, description="Continue from the latest checkpoint in the output dir "
                         "(Kolo's -UseCheckpoint).", json_schema_extra={"group": "output"})
    overwrite: bool = Field(False, description="Replace a finished run in the output dir.",
                            json_schema_extra={"group": "output"})
    quantization: Quantizations = Field(default_factory=list, description="Export these GGUF quantisations after "
                                    "training (repeatable): " + ", ".join(QUANTIZATIONS) + ".",
                                    json_schema_extra={"group": "output"})
    report_to: Literal["none", "tensorboard", "wandb"] = Field("none", description="Experiment tracker.",
                                                               json_schema_extra={"group": "output"})
    sample_prompt: Optional[str] = Field(None, description="Prompt for the post-training sample (default: the "
                                         "first user turn of the data).", json_schema_extra={"group": "output"})

    # --- distributed (the host runs the trainer under torchrun when nproc * nnodes > 1; kolo_trainer.train.launch)
    nproc: int = Field(1, ge=1, le=1024, description="Training processes on this machine (one per GPU; DDP through "
                       "torchrun). 1 = a single process.", json_schema_extra={"group": "distributed"})
    nnodes: int = Field(1, ge=1, le=4096, description="Machines taking part (each runs kolo train with its own "
                        "--node-rank; the data root must be shared).", json_schema_extra={"group": "distributed"})
    node_rank: int = Field(0, ge=0, description="This machine's number, 0 .. nnodes-1; node 0 holds rank 0, which "
                           "alone writes the run folder.", json_schema_extra={"group": "distributed"})
    master_addr: str = Field("127.0.0.1", description="Address of node 0, reachable from every node.",
                             json_schema_extra={"group": "distributed"})
    master_port: int = Field(29500, ge=1, le=65535, description="Free TCP port on node 0 for the rendezvous.",
                             json_schema_extra={"group": "distributed"})
    fsdp: bool = Field(False, description="Shard a full fine-tune's weights, gradients and optimizer over the "
                       "processes (FSDP) instead of a copy per process (DDP); needs --method full and more than one "
                       "process.", json_schema_extra={"group": "distributed"})

    # --- plan (kolo_trainer.plan: the estimate `kolo plan` prints and every training run checks first)
    gpu_memory: Optional[float] = Field(None, gt=0.0, le=65536.0, description="Plan for a GPU with this many GiB "
                                        "instead of the visible one (e.g. 24).", json_schema_extra={"group": "plan"})
    plan_check: bool = Field(True, description="Refuse, before the model loads, a run the estimate says cannot "
                             "fit the GPU/RAM or the disk (--no-plan-check trains anyway).",
                             json_schema_extra={"group": "plan"})

    @field_validator("base_model", "chat_template", "master_addr")
    @classmethod
    def _no_control(cls, v: str) -> str:
        names.check_text(v)
        return v

    @property
    def world_size(self) -> int:
        """Training processes in all: nproc x nnodes."""
        return self.nproc * self.nnodes

    @model_validator(mode="after")
    def _distributed(self) -> "TrainOptions":
        problems = []
        if self.node_rank >= self.nnodes:
            problems.append(f"--node-rank {self.node_rank}: must be below --nnodes {self.nnodes}")
        if self.fsdp and (self.method != "full" or self.world_size < 2):
            problems.append("--fsdp shards a full fine-tune over several processes: use it with --method full and "
                            "--nproc (or --nnodes) above 1")
        # unsloth's own docs (2026) describe DDP as a manual setup, not yet official, and kolo cannot verify it:
        # refuse rather than train something unchecked. --backend auto picks hf there (train/backends.py).
        if self.backend == "unsloth" and self.world_size > 1:
            problems.append("--backend unsloth trains on one GPU only in kolo; with --nproc/--nnodes above 1 use "
                            "--backend hf (transformers + peft under DDP) or auto")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class ExportOptions(_Options):
    """Options of ``kolo export`` / ``python -m kolo_trainer export``."""

    output_dir: RunName = Field(..., description="Run folder name under <data root>/outputs/ (a finished training run).")
    quantization: Quantizations = Field(default_factory=lambda: ["Q4_K_M"], description="Quantisations to write "
                                    "(repeatable): " + ", ".join(QUANTIZATIONS) + ". F16 is always written.")
    adapter_only: bool = Field(False, description="Convert only the LoRA adapter to GGUF; the Modelfile uses FROM "
                               "<base> + ADAPTER.")
    verify: bool = Field(True, description="Load every GGUF, compare tokens and greedy output with the HF model, "
                         "and check the Modelfile template.")
    system: Optional[str] = Field(None, description="SYSTEM prompt for the Modelfile (default: the dataset's shared "
                                  "system prompt, if any).")
    num_ctx: Optional[int] = Field(None, ge=16, description="PARAMETER num_ctx (default: the training "
                                   "max_seq_length).")
    temperature: float = Field(0.7, ge=0.0, le=5.0, description="PARAMETER temperature in the Modelfile.")
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="PARAMETER top_p in the Modelfile.")
    force: bool = Field(False, description="Redo every stage even when its outputs are up to date.")

class ChatOptions(_Options):
    """Options of ``kolo chat`` / ``python -m kolo_trainer chat``."""

    output_dir: RunName = Field(..., description="Run folder name under <data root>/outputs/ (an exported run).")
    quantization: Optional[str] = Field(None, description="Which GGUF to chat with: " + ", ".join(QUANTIZATIONS)
                                        + " (default: Q4_K_M when exported, else the smallest exported).")
    prompt: Optional[str] = Field(None, description="Ask one question, print the answer and exit (default: an "
                                  "interactive chat; Ctrl-D or /bye ends it).")
    temperature: Optional[float] = Field(None, ge=0.0, le=5.0, description="Override the Modelfile's temperature "
                                         "(0 = greedy).")
    max_tokens: int = Field(256, ge=1, le=1_048_576, description="Longest answer in tokens.")

    @field_validator("quantization")
    @classmethod
    def _quant(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else _normalise_quant([v])[0]

    @field_validator("prompt")
    @classmethod
    def _text(cls, v: Optional[str]) -> Optional[str]:
        # A prompt may hold newlines and any visible text; only what no argv or tokenizer can carry is refused.
        if v is not None and ("\x00" in v or any(0xD800 <= ord(c) <= 0xDFFF for c in v)):
            raise ValueError("contains a NUL or a lone surrogate, which is not valid text")
        return v
