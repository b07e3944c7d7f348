"""transformers' Trainer, configured for kolo.

Why Trainer and not TRL's SFTTrainer (see container/pyproject.toml): trl 1.15 (the version unsloth allows) breaks
on a CPU-only torch, and TRL's assistant-only loss needs ``{% generation %}`` markers that most model templates lack.
kolo encodes the rows itself (``kolo_trainer.masking``) and hands Trainer ready ``input_ids``/``labels``; Trainer
still gives checkpoints with optimizer/RNG state (exact resume), evaluation, early stopping and report_to.

The subclass changes two things: the train sampler (kolo's length-grouped one, with precomputed lengths), and it
keeps the time spent evaluating/saving so that tokens/s measures training only.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any


def steps_plan(n_rows: int, opts: Any) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps), as Trainer will compute them. With several processes
    (--nproc x --nnodes) the DistributedSampler gives each rank ceil(rows / world) rows."""
    rows = math.ceil(n_rows / max(1, getattr(opts, "world_size", 1)))
    per_epoch = max(1, math.ceil(math.ceil(rows / opts.batch_size) / opts.gradient_accumulation_steps))
    total = opts.max_steps if opts.max_steps > 0 else per_epoch * opts.epochs
    return per_epoch, total


def training_arguments(opts: Any, ckpt_dir: Path, loaded: Any, has_eval: bool, n_train: int) -> Any:
    from transformers import TrainingArguments

    per_epoch, total = steps_plan(n_train, opts)
    eval_steps = opts.eval_steps or max(1, min(opts.save_steps, per_epoch))
    report = [] if opts.report_to == "none" else [opts.report_to]
    kwargs: dict[str, Any] = dict(
        output_dir=str(ckpt_dir),
        num_train_epochs=opts.epochs,
        max_steps=opts.max_steps,
        per_device_train_batch_size=opts.batch_size,
        per_device_eval_batch_size=opts.batch_size,
        gradient_accumulation_steps=opts.gradient_accumulation_steps,
        learning_rate=opts.learning_rate,
        weight_decay=opts.weight_decay,
        warmup_steps=opts.warmup_steps,
        lr_scheduler_type=opts.scheduler_type,
        logging_steps=opts.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=opts.save_steps,
        save_total_limit=opts.save_total_limit,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_steps if has_eval else None,
        seed=opts.seed,
        data_seed=opts.seed,
        bf16=loaded.bf16,
        fp16=loaded.fp16,
        # Checkpointing is already applied to the model by the backend (unsloth has its own variant).
        gradient_checkpointing=False,
        report_to=report,
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=loaded.device.kind == "cuda",
        disable_tqdm=True,  # kolo's own progress events replace the tqdm bar
        use_cpu=loaded.device.kind == "cpu",
        optim="adamw_torch",
        save_only_model=False,  # optimizer + RNG state: a resumed run continues exactly
    )
    if opts.report_to != "none":
        _tracker_environment(opts, ckpt_dir.parent)
        kwargs["run_name"] = opts.output_dir
    if opts.early_stopping_patience and has_eval:
        # Keep the BEST checkpoint, not the last: a checkpoint at every evaluation (so the best one exists on
        # disk), never rotated away, and loaded back when training ends; the saved adapter/model (and so every
        # export) is then the best one. kolo.json's train.best_checkpoint names it.
        kwargs.update(metric_for_best_model="eval_loss", greater_is_better=False, load_best_model_at_end=True,
                      save_steps=eval_steps)
    kwargs.update(_distributed_arguments(opts))
    if loaded.method == "qlora":
        kwargs["optim"] = "paged_adamw_8bit"
    if loaded.device.kind == "cpu":
        kwargs["use_cpu"] = True
    return TrainingArguments(**kwargs)


def _tracker_environment(opts: Any, run_dir: Path) -> None:
    """Where the trackers write: inside the run folder (runs/ for TensorBoard, wandb/ for wandb), never the
    working directory. Set only when the user has not chosen (setdefault)."""
    import os

    # transformers 5 dropped TrainingArguments.logging_dir; its TensorBoard callback reads this variable.
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(run_dir / "runs"))
    os.environ.setdefault("WANDB_DIR", str(run_dir))
    os.environ.setdefault("WANDB_PROJECT", "kolo")


def wandb_problems(environ: Any) -> list[str]:
    """--report-to wandb: the key comes from the environment only (WANDB_API_KEY; docker exec passes it by name,
    so it is in no argv, manifest or --dry-run line), or the run stays on disk (WANDB_MODE=offline)."""
    mode = (environ.get("WANDB_MODE") or "online").lower()
    if mode in ("offline", "dryrun", "disabled") or environ.get("WANDB_API_KEY"):
        return []
    return ["--report-to wandb: no WANDB_API_KEY in the environment; export it (kolo never takes the key as an "
            "option), or set WANDB_MODE=offline to write the run into the run folder and `wandb sync` it later"]


def _distributed_arguments(opts: Any) -> dict[str, Any]:
    """DDP / FSDP settings when several processes train (torchrun sets WORLD_SIZE; see train/distributed.py)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return {}
    # Every trainable parameter takes part in each forward pass (LoRA adapters, or the whole model): the default
    # (True) costs an extra traversal of the autograd graph per step and warns about it on every rank.
    out: dict[str, Any] = {"ddp_find_unused_parameters": False}
    if getattr(opts, "fsdp", False):
        # FSDP2 (torch fully_shard), reshard_after_forward=True: parameters, gradients and optimizer state sharded
        # (full_shard); one unit per decoder layer (accelerate reads the layer class from _no_split_modules).
        # The version is explicit: transformers 5.17 deprecates the string form ("full_shard auto_wrap") and
        # FSDP1 for v5.20, and use_orig_params was an FSDP1-only key that FSDP2 ignored.
        out.update(fsdp=True, fsdp_config={"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                           "reshard_after_forward": True})
    return out


def make_trainer(*, model: Any, args: Any, train_ds: Any, eval_ds: Any, collator: Any, tokenizer: Any,
                 callbacks: list, lengths: list[int], seed: int, early_stopping: int | None) -> Any:
    from transformers import EarlyStoppingCallback, Trainer

    from .collate import LengthGroupedSampler

    class KoloTrainer(Trainer):
        kolo_pause_s = 0.0

        def _get_train_sampler(self, train_dataset=None):
            # Batches of similar length: a random sampler would pad short rows to the longest in the batch.
            # Grouped per micro-batch: each micro-batch is padded on its own.
            return LengthGroupedSampler(lengths, self.args.train_batch_size, seed)

        def evaluate(self, *a, **k):
            t = time.perf_counter()
            try:
                return super().evaluate(*a, **k)
            finally:
                self.kolo_pause_s += time.perf_counter() - t

        def _load_optimizer_and_scheduler(self, checkpoint):
            # Several CPU processes: accelerate names each rank's device "cpu:<n>" and Trainer loads the optimizer
            # state with map_location=that device, which torch.load cannot map ("don't know how to restore data
            # location ... cpu:0"), so a resumed CPU DDP run failed. Plain "cpu" is the same memory.
            if checkpoint is None or self.args.world_size <= 1 or self.args.device.type != "cpu":
                return super()._load_optimizer_and_scheduler(checkpoint)
            import torch

            real = torch.load

            def cpu_load(*a, **k):
                if isinstance(k.get("map_location"), torch.device) and k["map_location"].type == "cpu":
                    k["map_location"] = "cpu"
                return real(*a, **k)

            torch.load = cpu_load
            try:
                return super()._load_optimizer_and_scheduler(checkpoint)
            finally:
                torch.load = real

        def _save_checkpoint(self, *a, **k):
            t = time.perf_counter()
            try:
                return super()._save_checkpoint(*a, **k)
            finally:
                self.kolo_pause_s += time.perf_counter() - t

    cbs = list(callbacks)
    if early_stopping and eval_ds is not None:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=early_stopping))
    trainer = KoloTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                          data_collator=collator, processing_class=tokenizer, callbacks=cbs)
    # With tqdm disabled Trainer prints every log dict to stdout; kolo's progress events already carry it.
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer
