"""Batching: length grouping, padding to the batch max, padding-free flattening, token statistics."""

from __future__ import annotations

import random

import pytest

from kolo_trainer.train.collate import (IGNORE, FlattenCollator, LengthGroupedSampler, PadCollator, count_tokens,
                                        length_grouped_indices, token_stats)
from kolo_trainer.train.trainer import steps_plan


def _lengths(n: int = 500, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(20, 1000) for _ in range(n)]


def test_length_grouping_is_a_permutation_with_little_padding() -> None:
    lengths = _lengths()
    bs = 4
    order = length_grouped_indices(lengths, bs, seed=1, epoch=0)
    assert sorted(order) == list(range(len(lengths)))
    batches = [order[i:i + bs] for i in range(0, len(order), bs)]
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    rng = random.Random(3)
    shuffled = list(range(len(lengths)))
    rng.shuffle(shuffled)
    padded_random = sum(max(lengths[i] for i in shuffled[j:j + bs]) * len(shuffled[j:j + bs])
                        for j in range(0, len(shuffled), bs))
    real = sum(lengths)
    # grouped batches waste a few percent on padding; random ones waste a large fraction
    assert padded / real < 1.05 < 1.3 < padded_random / real


def test_length_grouping_is_deterministic_per_epoch_and_differs_between_epochs() -> None:
    lengths = _lengths(200)
    a = length_grouped_indices(lengths, 2, seed=5, epoch=0)
    assert a == length_grouped_indices(lengths, 2, seed=5, epoch=0)
    assert a != length_grouped_indices(lengths, 2, seed=5, epoch=1)
    s = LengthGroupedSampler(lengths, 2, seed=5)
    assert list(s) == a and len(s) == 200
    s.set_epoch(1)
    assert list(s) == length_grouped_indices(lengths, 2, seed=5, epoch=1)


def test_pad_collator_pads_to_batch_max_and_ignores_padding() -> None:
    torch = pytest.importorskip("torch")
    feats = [{"input_ids": [1, 5, 6], "labels": [IGNORE, IGNORE, 6]}, {"input_ids": [1, 7], "labels": [IGNORE, 7]}]
    b = PadCollator(pad_token_id=0)(feats)
    assert b["input_ids"].tolist() == [[1, 5, 6], [1, 7, 0]]
    assert b["labels"].tolist() == [[IGNORE, IGNORE, 6], [IGNORE, 7, IGNORE]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert b["input_ids"].dtype == torch.long
    assert count_tokens(b) == 5


def test_flatten_collator_restarts_positions_and_masks_row_starts() -> None:
    pytest.importorskip("torch")
    feats = [{"input_ids": [1, 5, 6], "labels": [5, 5, 6]}, {"input_ids": [1, 7], "labels": [1, 7]}]
    b = FlattenCollator()(feats)
    assert b["input_ids"].tolist() == [[1, 5, 6, 1, 7]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    # the first label of each row would be the previous row's last prediction target: never trained
    assert b["labels"].tolist() == [[IGNORE, 5, 6, IGNORE, 7]]
    assert "attention_mask" not in b and count_tokens(b) == 5


def test_packed_rows_do_not_attend_to_each_other() -> None:
    """The padding-free batch gives the same loss as the rows run one by one (transformers turns restarting
    position_ids into a block-diagonal mask on sdpa)."""
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2)).eval()
    # as in training (backends set it): with a KV cache transformers does not look for packed rows
    model.config.use_cache = False
    rows = [[1, 5, 6, 7, 8], [1, 9, 10]]
    feats = [{"input_ids": r, "labels": r} for r in rows]
    with torch.no_grad():
        packed = model(**FlattenCollator()(feats)).logits[0]
        single = [model(input_ids=torch.tensor([r])).logits[0] for r in rows]
    assert torch.allclose(packed[:5], single[0], atol=1e-5)
    assert torch.allclose(packed[5:], single[1], atol=1e-5)


def test_token_stats_counts_truncated_rows() -> None:
    s = token_stats([10, 20, 30, 40, 1000], max_length=35)
    assert (s["min"], s["max"], s["p50"], s["truncated_rows"]) == (10, 1000, 30, 2)
    assert s["mean"] == 220.0 and s["p95"] == 1000
    assert token_stats([], 16)["truncated_rows"] == 0


class _O:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_steps_plan_matches_trainer_arithmetic() -> None:
    assert steps_plan(34, _O(batch_size=2, gradient_accumulation_steps=1, max_steps=-1, epochs=40)) == (17, 680)
    assert steps_plan(9, _O(batch_size=4, gradient_accumulation_steps=2, max_steps=-1, epochs=3)) == (2, 6)
    assert steps_plan(9, _O(batch_size=4, gradient_accumulation_steps=2, max_steps=5, epochs=3)) == (2, 5)
