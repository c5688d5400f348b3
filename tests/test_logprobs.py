import torch

from posttrain.logprobs import completion_logprobs, gather_logprobs, sequence_logprobs
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
