"""Completion log-probs through the tiny random Llama: a naive reference, padding invariance, the shared
prefix layout against a concatenated forward."""
import pytest
import torch

from posttrain.data.collate import pair_collate, shared_prefix_collate
from posttrain.logprobs import completion_logprobs, sequence_logprobs, shared_prefix_pair_logprobs
from posttrain.models.attention import SEGMENT_ATTENTION
from posttrain.models.attention import stats as attention_stats
from tests.helpers import pad, random_features, tiny_llama


def naive(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits.double(), -1)[:, :-1]
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    tok = logp.gather(-1, labels.clamp_min(0)[..., None]).squeeze(-1) * mask
    return tok, mask


def test_completion_logprobs_matches_naive_reference():
    model = tiny_llama().eval()
    batch = pad(random_features(5, seed=1))
    tok, mask = completion_logprobs(model, **batch)
    ref_tok, ref_mask = naive(model, batch)
    assert torch.equal(mask[:, 1:], ref_mask) and not mask[:, 0].any()
    assert torch.allclose(tok[:, 1:].double(), ref_tok, atol=1e-5)
    assert (tok[~mask] == 0).all()


def test_padding_invariance_alone_vs_batched():
    model = tiny_llama().eval()
    feats = random_features(6, seed=2)
    with torch.no_grad():
        batched = sequence_logprobs(*completion_logprobs(model, **pad(feats)))
        alone = torch.stack([sequence_logprobs(*completion_logprobs(model, **pad([f]))) [0] for f in feats])
        # extra right padding beyond the longest example changes nothing either
        wide = pad(feats + [{"input_ids": [5] * 40, "labels": [-100] * 40}])
        padded_more = sequence_logprobs(*completion_logprobs(model, **wide))[:-1]
    assert torch.allclose(batched, alone, atol=1e-5)
    assert torch.allclose(batched, padded_more, atol=1e-5)


def test_no_supervised_tokens_gives_zeros_without_forward():
    model = tiny_llama()
    batch = pad([{"input_ids": [1, 2, 3], "labels": [-100, -100, -100]}])
    tok, mask = completion_logprobs(model, **batch)
    assert tok.shape == (1, 3) and not mask.any()


def _random_pairs(n: int, seed: int, vocab: int = 64) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    # noqa: E731
    rnd = lambda lo, hi: torch.randint(1, vocab, (int(torch.randint(lo, hi, (1,), generator=g)),),
                                       generator=g).tolist()
    return [{"prompt_ids": rnd(1, 9), "chosen_ids": rnd(1, 7), "rejected_ids": rnd(1, 11)} for _ in range(n)]


# "sdpa": transformers' own (a model loaded elsewhere); "segment" and the padding-free rows: posttrain's
@pytest.mark.parametrize("attn", ["sdpa", "eager", "segment", "sdpa-padding-free"])
def test_shared_prefix_equals_concatenated_forward(attn):
    model = tiny_llama()
    model.config._attn_implementation = attn if attn in ("sdpa", "eager") else SEGMENT_ATTENTION
    free = attn.endswith("padding-free")  # all pairs in one row, attention per pair (models/attention.py)
    feats = _random_pairs(6, seed=3)
    concat = pair_collate(feats, 0)
    tok, mask = completion_logprobs(model, concat["input_ids"], concat["attention_mask"], concat["labels"])
    seq = sequence_logprobs(tok, mask)
    before = attention_stats["pairs"]
    shared = shared_prefix_pair_logprobs(model, shared_prefix_collate(feats, 0, padding_free=free))
    assert attention_stats["pairs"] - before == (model.config.num_hidden_layers if free else 0)
    for k, side in enumerate(("chosen", "rejected")):
        t, m = shared[side]
        assert m.sum(-1).tolist() == [len(f[f"{side}_ids"]) for f in feats]
        # per token too: the completion's tokens in order
        ref_tok = [tok[k * 6 + b][mask[k * 6 + b]] for b in range(6)]
        for b in range(6):
            assert torch.allclose(t[b][m[b]], ref_tok[b], atol=1e-5)
        assert torch.allclose(sequence_logprobs(t, m), seq[k * 6:(k + 1) * 6], atol=1e-5)
    # gradients agree as well
    model.zero_grad()
    sequence_logprobs(*completion_logprobs(model, concat["input_ids"], concat["attention_mask"],
                                           concat["labels"])).sum().backward()
    g_ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out = shared_prefix_pair_logprobs(model, shared_prefix_collate(feats, 0, padding_free=free))
    (sequence_logprobs(*out["chosen"]).sum() + sequence_logprobs(*out["rejected"]).sum()).backward()
    for p, g in zip(model.parameters(), g_ref):
        assert torch.allclose(p.grad, g, atol=1e-5)
