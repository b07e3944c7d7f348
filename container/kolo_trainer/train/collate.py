"""Encoded rows -> batches, with as little padding as possible.

Why this is where the CPU speed comes from: a mixed-length dataset (20..1000 tokens) padded to the longest row of
a random batch spends most of its compute on padding. Two ways out, both kept here:

* default: a length-grouped sampler (rows of similar length share a batch; order still shuffled between
  groups) and padding only to the longest row *of the batch*;
* ``--packing``: padding-free. The batch is concatenated into one ``[1, total]`` row that carries both ways the
  two backends recognise packed rows, so rows never attend to each other on either:

  - ``position_ids`` restarting at every row: transformers >= 4.53 (the hf backend) turns them into a
    block-diagonal causal mask for sdpa/eager (``masking_utils.find_packed_sequence_indices``) and into varlen
    kernels for flash attention;
  - ``packed_seq_lengths`` (int32, one length per row, summing to ``total``): unsloth's attention ignores
    position_ids for this and isolates rows only from this tensor (``unsloth.utils.packing.
    get_packed_info_from_kwargs``, what its own TRL collator wrapper adds). Its presence also stops unsloth's
    LlamaModel forward from cutting ``input_ids`` to ``max_seq_length`` (which would leave the labels uncut).
    transformers' models take it in ``**kwargs`` and ignore it.

torch is imported inside functions so that this module can be imported (and unit-tested for its pure parts)
without it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    row: int = -1  # index of the source row (the sample prompt is taken from a row that was trained on)


class EncodedDataset:
    """A list of encoded rows; what the Trainer's dataloader indexes."""

    def __init__(self, examples: Sequence[Example]):
        self.examples = list(examples)
        self.lengths = [len(e.input_ids) for e in self.examples]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        e = self.examples[i]
        return {"input_ids": e.input_ids, "labels": e.labels}


class PadCollator:
    """Right-pad to the longest row of the batch; padded labels are ignored by the loss."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        n = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            n = int(math.ceil(n / self.pad_to_multiple_of) * self.pad_to_multiple_of)
        ids = torch.full((len(features), n), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), n), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(features), n), dtype=torch.long)
        for i, f in enumerate(features):
            k = len(f["input_ids"])
            ids[i, :k] = torch.tensor(f["input_ids"], dtype=torch.long)
            labels[i, :k] = torch.tensor(f["labels"], dtype=torch.long)
            mask[i, :k] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class FlattenCollator:
    """Padding-free: one ``[1, total]`` row, ``position_ids`` restarting per row, ``packed_seq_lengths``, no
    attention_mask (see the module docstring for which backend reads what).

    The first label of every row is set to IGNORE: after the model's internal shift it is the target of the
    *previous* row's last token, which must not learn to predict the next row's start. ``max_length`` cuts a
    longer row's input_ids and labels at the same token (rows normally arrive cut already; this keeps the two
    aligned whatever the caller did).
    """

    def __init__(self, max_length: int | None = None):
        self.max_length = max_length

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        ids: list[int] = []
        labels: list[int] = []
        pos: list[int] = []
        seq_lengths: list[int] = []
        for f in features:
            row_ids, row_labels = list(f["input_ids"]), list(f["labels"])
            if len(row_ids) != len(row_labels):
                raise ValueError(f"a row has {len(row_ids)} input_ids but {len(row_labels)} labels")
            if self.max_length:
                row_ids, row_labels = row_ids[:self.max_length], row_labels[:self.max_length]
            k = len(row_ids)
            if k == 0:
                continue  # a zero length would make an empty segment, which unsloth's varlen kernels reject
            ids += row_ids
            labels += [IGNORE] + row_labels[1:]
            pos += list(range(k))
            seq_lengths.append(k)
        return {
            "input_ids": torch.tensor([ids], dtype=torch.long),
            "labels": torch.tensor([labels], dtype=torch.long),
            "position_ids": torch.tensor([pos], dtype=torch.long),
            "packed_seq_lengths": torch.tensor(seq_lengths, dtype=torch.int32),
        }


def count_tokens(batch: dict[str, Any]) -> int:
    """Real (non-padding) tokens in a collated batch: what tokens/s counts."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())


def length_grouped_indices(lengths: Sequence[int], batch_size: int, seed: int, epoch: int = 0,
                           mega: int = 64) -> list[int]:
    """Indices in an order where each run of ``batch_size`` has rows of similar length.

    Shuffle, cut into megabatches of ``mega * batch_size`` rows, sort each by length, cut into batches and
    shuffle the batches. Rows keep some randomness (which megabatch they fall in, the batch order) while the
    padding inside a batch stays small. Deterministic for a (seed, epoch), which a resumed run relies on to skip
    the batches it already did.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    size = max(1, mega * batch_size)
    batches: list[list[int]] = []
    for start in range(0, len(idx), size):
        chunk = sorted(idx[start:start + size], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return [i for b in batches for i in b]


class LengthGroupedSampler:
    """A torch-compatible sampler over :func:`length_grouped_indices`; the Trainer calls ``set_epoch``."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(length_grouped_indices(self.lengths, self.batch_size, self.seed, self.epoch))


def token_stats(lengths: Sequence[int], max_length: int) -> dict[str, Any]:
    """min/max/mean/p50/p95 of the full (untruncated) token lengths and how many rows ``max_length`` cuts."""
    if not lengths:
        return {"min": 0, "max": 0, "mean": 0.0, "p50": 0, "p95": 0, "truncated_rows": 0, "max_seq_length": max_length}
    s = sorted(lengths)

    def pct(p: float) -> int:
        return s[min(len(s) - 1, max(0, int(math.ceil(p * len(s))) - 1))]

    return {
        "min": s[0], "max": s[-1], "mean": round(sum(s) / len(s), 1), "p50": pct(0.5), "p95": pct(0.95),
        "truncated_rows": sum(1 for n in s if n > max_length), "max_seq_length": max_length,
    }
