"""Collation: padding, pair batches, the shared-prefix pair layout, and the layout of packed rows."""
import pytest
import torch

from posttrain.data import (
    IGNORE_INDEX,
    PackingCollator,
    model_inputs,
    pack_features,
    pad_collate,
    pair_collate,
    segment_ids,
)
from posttrain.data.collate import shared_prefix_collate
from posttrain.logprobs import shared_prefix_mask


def test_pad_collate_shapes_and_values():
    feats = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "weights": [0.0, 1.0, 0.5], "idx": 0},
             {"input_ids": [8], "labels": [8], "weights": [1.0], "idx": 1}]
    b = pad_collate(feats, pad_token_id=2)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 2, 2]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert b["weights"].dtype == torch.float32 and b["weights"].tolist() == [[0.0, 1.0, 0.5], [1.0, 0.0, 0.0]]
    assert b["idx"].tolist() == [0, 1]
    assert b["input_ids"].dtype == torch.long
    one = pad_collate(feats[:1], pad_token_id=2, pad_to_multiple_of=4)
    assert one["input_ids"].shape == (1, 4) and one["labels"][0, 3] == IGNORE_INDEX
    assert one["attention_mask"].tolist() == [[1, 1, 1, 0]]


def test_pair_collate():
    b = pair_collate([{"prompt_ids": [1, 2], "chosen_ids": [3, 4], "rejected_ids": [5]},
                      {"prompt_ids": [1], "chosen_ids": [6], "rejected_ids": [7, 8, 9]}], pad_token_id=0)
    assert b["input_ids"].tolist() == [[1, 2, 3, 4], [1, 6, 0, 0], [1, 2, 5, 0], [1, 7, 8, 9]]
    assert b["labels"].tolist() == [[-100, -100, 3, 4], [-100, 6, -100, -100], [-100, -100, 5, -100],
                                    [-100, 7, 8, 9]]


def test_pack_features_layout():
    feats = [{"input_ids": [1, 2, 3], "labels": [1, 2, 3], "weights": [1.0, 1.0, 1.0]},
             {"input_ids": [4, 5], "labels": [-100, 5], "weights": [0.5, 0.5]},
             {"input_ids": [6, 7, 8, 9], "labels": [6, 7, 8, 9], "weights": [2.0] * 4},
             {"input_ids": [10], "labels": [10], "weights": [3.0]}]
    rows = pack_features(feats, max_length=6)
    assert [r["seq_lens"] for r in rows] == [[3, 2], [4, 1]]
    assert rows[0]["position_ids"] == [0, 1, 2, 0, 1]
    assert rows[0]["labels"] == [-100, 2, 3, -100, 5]  # no token predicts the start of the next example
    assert rows[1]["weights"] == [2.0] * 4 + [3.0]
    assert [r["seq_lens"] for r in pack_features(feats, 6, strategy="first_fit")] == [[3, 2, 1], [4]]
    with pytest.raises(ValueError, match="more than max_length=3"):
        pack_features(feats, max_length=3)
    b = PackingCollator(max_length=8, pad_token_id=0)(feats)
    assert set(b) == {"input_ids", "labels", "position_ids", "weights", "num_sequences", "cu_seq_lens_q",
                      "cu_seq_lens_k", "max_length_q", "max_length_k"}  # NO attention_mask
    assert b["num_sequences"].item() == 4
    assert b["input_ids"].shape == (2, 8)  # next_fit: [3, 2] then 4 does not fit in the 3 left
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2], [0, 1, 2, 3, 0, 0, 1, 2]]
    two = PackingCollator(max_length=6, pad_token_id=0)(feats)
    assert two["input_ids"].tolist() == [[1, 2, 3, 4, 5, 0], [6, 7, 8, 9, 10, 0]]
    assert two["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 0]]
    assert two["labels"][:, -1].tolist() == [-100, -100] and two["weights"][:, -1].tolist() == [0.0, 0.0]
    assert segment_ids(two["position_ids"]).tolist() == [[0, 0, 0, 1, 1, 2], [0, 0, 0, 0, 1, 2]]
    # example boundaries over the flattened rows; each row's padding is an example of its own
    assert two["cu_seq_lens_q"].tolist() == [0, 3, 5, 6, 10, 11, 12] and two["max_length_q"] == 4
    assert two["cu_seq_lens_q"].dtype == torch.int32
    assert model_inputs(two).keys() == {"input_ids", "position_ids", "use_cache", "cu_seq_lens_q",
                                        "cu_seq_lens_k",
                                        "max_length_q", "max_length_k"}
    free = PackingCollator(max_length=None, pad_token_id=0)(feats)  # padding-free: one row, no pad token
    assert free["input_ids"].tolist() == [list(range(1, 11))]
    assert free["labels"].tolist() == [[-100, 2, 3, -100, 5, -100, 7, 8, 9, -100]]
    assert free["cu_seq_lens_q"].tolist() == [0, 3, 5, 9, 10] and free["num_sequences"].item() == 4
    assert model_inputs(two)["use_cache"] is False


def test_shared_prefix_collate_layout():
    b = shared_prefix_collate([{"prompt_ids": [1, 2], "chosen_ids": [3, 4], "rejected_ids": [5]},
                               {"prompt_ids": [6], "chosen_ids": [7], "rejected_ids": [8, 9, 10]}], 0)
    assert b["input_ids"].tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 3, 2], [0, 1, 1, 2, 3]]
    assert b["pair_segments"].tolist() == [[0, 0, 1, 1, 2], [0, 1, 2, 2, 2]]
    assert b["chosen_index"].tolist() == [[1, 2], [0, 0]] and b["chosen_targets"].tolist() == [[3, 4], [7,
                                                                                                        -100]]
    assert b["rejected_index"].tolist() == [[1, 0, 0], [0, 2, 3]]
    assert b["rejected_targets"].tolist() == [[5, -100, -100], [8, 9, 10]]
    mask = shared_prefix_mask(b["pair_segments"], "sdpa", torch.float32)[1, 0]
    # row 1, token 8 (position 2 in the row) sees the prompt and itself, not the chosen token 7
    assert mask[2].tolist() == [True, False, True, False, False]
    with pytest.raises(ValueError):
        shared_prefix_collate([{"prompt_ids": [], "chosen_ids": [1], "rejected_ids": [2]}], 0)
    free = shared_prefix_collate([{"prompt_ids": [1, 2], "chosen_ids": [3, 4], "rejected_ids": [5]},
                                  {"prompt_ids": [6], "chosen_ids": [7], "rejected_ids": [8, 9, 10]}], 0,
                                 padding_free=True)
    assert "attention_mask" not in free and free["input_ids"].tolist() == [list(range(1, 11))]
    assert free["position_ids"].tolist() == [[0, 1, 2, 3, 2, 0, 1, 1, 2, 3]]
    assert free["pair_bounds"].tolist() == [[0, 2, 2, 1], [5, 1, 1, 3]]
    assert free["chosen_index"].tolist() == [[1, 2], [5, 0]]
    assert free["rejected_index"].tolist() == [[1, 0, 0], [5, 7, 8]]
    assert free["rejected_targets"].tolist() == b["rejected_targets"].tolist()
