"""--packing: the padding-free batch satisfies both backends' contracts for keeping packed rows apart.

* unsloth 2026.10.5 isolates packed rows only from ``packed_seq_lengths`` (``unsloth.utils.packing.
  get_packed_info_from_kwargs``: a 1-D int32 tensor of row lengths, whose cumulative sum gives the varlen
  boundaries, summing to the flattened length), and only its presence stops its LlamaModel forward from cutting
  ``input_ids`` to max_seq_length while leaving the labels long. unsloth cannot run here (it needs a CUDA GPU), so
  the contract is checked on the tensors; ``scripts/gpu_smoke.sh`` measures the isolation on a GPU.
* transformers (the hf backend) isolates from restarting ``position_ids``, and must accept the extra key: a real
  Llama forward on the packed batch gives the same logits as the rows run one by one.
"""

from __future__ import annotations

import pytest

from kolo_trainer.train.collate import IGNORE, FlattenCollator

torch = pytest.importorskip("torch")

ROWS = [[1, 5, 6, 7, 8], [1, 9, 10], [1, 11, 12, 13, 14, 15, 16]]


def _feats(rows):
    return [{"input_ids": r, "labels": [IGNORE] + r[1:]} for r in rows]


def test_batch_carries_unsloths_packed_seq_lengths():
    b = FlattenCollator()(_feats(ROWS))
    lengths = b["packed_seq_lengths"]
    assert lengths.dtype == torch.int32 and lengths.dim() == 1
    assert lengths.tolist() == [len(r) for r in ROWS]
    total = b["input_ids"].shape[1]
    assert b["input_ids"].shape == b["labels"].shape == b["position_ids"].shape == (1, total)
    assert int(lengths.sum()) == total
    assert "attention_mask" not in b  # unsloth's wrapper drops it too: a dense mask would override the varlen path


def test_both_boundary_signals_agree():
    """The row starts unsloth derives (cumsum of packed_seq_lengths) are exactly where position_ids restart,
    and each of them carries an ignored label (no row learns to predict the next row's first token)."""
    b = FlattenCollator()(_feats(ROWS))
    cu = [0] + torch.cumsum(b["packed_seq_lengths"], 0).tolist()
    starts = [i for i, p in enumerate(b["position_ids"][0].tolist()) if p == 0]
    assert starts == cu[:-1]
    assert all(b["labels"][0, s] == IGNORE for s in starts)


def test_max_length_cuts_input_ids_and_labels_at_the_same_token():
    rows = [{"input_ids": list(range(1, 11)), "labels": list(range(101, 111))}, {"input_ids": [1, 2, 3],
                                                                                 "labels": [IGNORE, 22, 23]}]
    b = FlattenCollator(max_length=4)(rows)
    assert b["input_ids"][0].tolist() == [1, 2, 3, 4, 1, 2, 3]
    assert b["labels"][0].tolist() == [IGNORE, 102, 103, 104, IGNORE, 22, 23]
    assert b["packed_seq_lengths"].tolist() == [4, 3]
    assert b["position_ids"][0].tolist() == [0, 1, 2, 3, 0, 1, 2]


def test_misaligned_row_is_refused():
    with pytest.raises(ValueError, match="3 input_ids but 2 labels"):
        FlattenCollator()([{"input_ids": [1, 2, 3], "labels": [IGNORE, 2]}])


def test_hf_model_accepts_the_batch_and_keeps_rows_apart():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2)).eval()
    model.config.use_cache = False  # as the backends set it for training
    b = FlattenCollator()(_feats(ROWS))
    with torch.no_grad():
        out = model(**b)
        packed = out.logits[0]
        single = torch.cat([model(input_ids=torch.tensor([r])).logits[0] for r in ROWS])
        leaky = model(input_ids=b["input_ids"]).logits[0]
    assert torch.isfinite(out.loss)
    assert torch.allclose(packed, single, atol=1e-5)
    assert not torch.allclose(leaky, single, atol=1e-3)  # the comparison can see a leak: without the metadata
