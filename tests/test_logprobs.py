import pytest
import torch

from posttrain.data.collate import pair_collate, shared_prefix_collate
from posttrain.logprobs import (
    completion_logprobs,
    gather_logprobs,
    sequence_logprobs,
    shared_prefix_mask,
    shared_prefix_pair_logprobs,
)
from posttrain.models.attention import SEGMENT_ATTENTION, segment_attention
from posttrain.models.attention import stats as attention_stats
from tests.helpers import pad, random_features, tiny_llama


def naive(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits.double(), -1)[:, :-1]
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    tok = logp.gather(-1, labels.clamp_min(0)[..., None]).squeeze(-1) * mask
    return tok, mask


def test_gather_logprobs_matches_log_softmax_chunked():
    torch.manual_seed(0)
    logits = torch.randn(7, 13, 50) * 5
    targets = torch.randint(0, 50, (7, 13))
    ref = torch.log_softmax(logits.double(), -1).gather(-1, targets[..., None]).squeeze(-1)
    for chunk in (1, 5, 1024):
        assert torch.allclose(gather_logprobs(logits, targets, chunk=chunk).double(), ref, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gather_logprobs_gradient_is_autograds_of_log_softmax(dtype):
    # the hand-written backward (g * (onehot - softmax), chunk by chunk) against autograd through log_softmax
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 37, generator=g).to(dtype).requires_grad_()
    targets = torch.randint(0, 37, (3, 5), generator=g)
    weights = torch.randn(3, 5, generator=g)
    (gather_logprobs(logits, targets, chunk=4) * weights).sum().backward()
    ours, logits.grad = logits.grad.clone(), None
    ref = torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None]).squeeze(-1)
    (ref * weights).sum().backward()
    tol = 1e-6 if dtype == torch.float32 else 2e-2  # bf16: one rounding of the gradient
    assert ours.dtype == dtype and torch.allclose(ours.float(), logits.grad.float(), atol=tol, rtol=tol)


def test_gather_logprobs_passes_gradcheck_in_float64():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(7, 11, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 11, (7,), generator=g)
    assert torch.autograd.gradcheck(lambda x: gather_logprobs(x, targets, chunk=3), (logits,))


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


def test_padding_free_pairs_refuse_layers_they_cannot_serve():
    """No mask fallback exists for pair rows: a sliding-window layer must fail, not attend wrongly."""
    import types
    q = torch.randn(1, 2, 5, 4)
    module = types.SimpleNamespace(training=False, is_causal=True, sliding_window=2)
    with pytest.raises(RuntimeError, match="plain causal"):
        segment_attention(module, q, q, q, None, pair_bounds=torch.tensor([[0, 2, 2, 1]]))
    plain = types.SimpleNamespace(training=False, is_causal=True)
    with pytest.raises(RuntimeError, match="do not tile"):
        segment_attention(plain, q, q, q, None, pair_bounds=torch.tensor([[0, 2, 2, 2]]))
