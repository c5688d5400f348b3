"""Collation: padding, pair batches, and packing that is exactly equivalent to unpacked examples."""
import pytest
import torch
import torch.nn.functional as F

from posttrain.data import (
    IGNORE_INDEX,
    PackingCollator,
    encode_conversation,
    model_inputs,
    pack_features,
    pad_collate,
    pair_collate,
    segment_ids,
)
from tests.data_helpers import load_smollm2_tokenizer


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


# ------------------------------------------------------------ packing == unpacked, on a tiny Llama

@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM
    tok = load_smollm2_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=128, vocab_size=len(tok))
    return tok, LlamaForCausalLM(config).eval()


def per_example_losses(logits, labels, position_ids=None):
    """Mean next-token loss of each example; packed rows are split by segment."""
    logp = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), reduction="none",
                           ignore_index=IGNORE_INDEX).view(labels.shape[0], -1)
    mask = labels[:, 1:] != IGNORE_INDEX
    if position_ids is None:
        return [(logp[i][mask[i]].mean()).item() for i in range(labels.shape[0])]
    seg = segment_ids(position_ids)[:, 1:]
    out = []
    for i in range(labels.shape[0]):
        for s in seg[i].unique().tolist():
            m = mask[i] & (seg[i] == s)
            if m.any():
                out.append(logp[i][m].mean().item())
    return out


def test_packed_loss_equals_unpacked(tiny):
    tok, model = tiny
    chats = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in [
        ("Hi", "Hello!"), ("What is 2+2?", "4."), ("Name a colour.", "Blue, or maybe green."),
        ("Tell me a very short story.", "Once upon a time a cat sat. The end."), ("Yes?", "No.")]]
    chats.append(chats[1] + [{"role": "user", "content": "And 3+3?"}, {"role": "assistant", "content": "6."}])
    feats = [encode_conversation(tok, c, max_length=96) for c in chats]
    for f in feats:  # a per-token extra rides along
        f["weights"] = [1.0] * len(f["input_ids"])
    with torch.no_grad():
        alone = [per_example_losses(model(torch.tensor([f["input_ids"]]), use_cache=False).logits,
                                    torch.tensor([f["labels"]]))[0] for f in feats]
        padded = pad_collate(feats, tok.pad_token_id)
        out = model(**model_inputs(padded)).logits
        assert per_example_losses(out, padded["labels"]) == pytest.approx(alone, abs=1e-5)

        collator = PackingCollator(max_length=128, pad_token_id=tok.pad_token_id)
        packed = collator(feats)
        assert packed["input_ids"].shape[0] < len(feats)  # really packed: several examples per row
        assert "attention_mask" not in packed and packed["weights"].shape == packed["input_ids"].shape
        logits = model(**model_inputs(packed)).logits
        assert per_example_losses(logits, packed["labels"], packed["position_ids"]) == pytest.approx(alone,
                                                                                                     abs=1e-5)

        # Pre-packed rows through the same collator give the same batch.
        again = collator(pack_features(feats, 128))
        assert again.keys() == packed.keys()
        assert all(torch.equal(again[k], packed[k]) if torch.is_tensor(packed[k]) else again[k] == packed[k]
                   for k in packed)
