"""Packing is exactly equivalent to unpacked examples: the same per-example losses from a random
Llama with the real SmolLM2 tokenizer."""
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
    segment_ids,
)
from tests.data_helpers import load_smollm2_tokenizer

# ------------------------------------------------------------ packing == unpacked, on a tiny Llama

@pytest.fixture(scope="module")
def tiny():
    """The SmolLM2 tokenizer and a random Llama over its vocabulary, in eval mode (this module's own
    `tiny`, in place of tests/integration/conftest.py's)."""
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
