"""The overlap passes of `posttrain synth math` alone (posttrain/synth/overlap.py): the n-gram pass,
the embedding pass's nearest-neighbour logic with a stand-in embedder, and near duplicates."""
from __future__ import annotations

import torch

from posttrain.synth.overlap import embedding_contamination, near_duplicates, ngram_contamination
from tests.synth_helpers import CLEAN, PARAPHRASE, TESTS

# ---------------------------------------------------------------- overlap passes

def test_ngram_pass_alone_catches_verbatim_and_lightly_edited_copies():
    edited = TESTS[0].replace("$2", "$3").upper()  # punctuation, case and one number do not hide it
    hits = ngram_contamination([CLEAN[0], TESTS[0], edited, PARAPHRASE, CLEAN[1]], TESTS, n=13, threshold=0.5)
    assert set(hits) == {1, 2} and hits[1] == (0, 1.0) and 0.5 <= hits[2][1] < 1.0
    # a paraphrase shares few 13-grams: this pass alone lets it through
    assert 3 not in hits


def test_embedding_pass_alone_with_a_stand_in_embedder():
    """Bag-of-words vectors stand in for MiniLM: the nearest-neighbour logic is what is tested here."""
    vocab = sorted({w for t in TESTS + CLEAN + [PARAPHRASE] for w in t.lower().split()})

    def embed(texts):
        v = torch.tensor([[float(w in t.lower().split()) for w in vocab] for t in texts])
        return torch.nn.functional.normalize(v, dim=-1)
    hits = embedding_contamination([CLEAN[0], TESTS[1], CLEAN[1]], TESTS, embed, threshold=0.99, top_k=2)
    assert set(hits) == {1} and hits[1]["test"] == 1 and len(hits[1]["neighbours"]) == 2


def test_near_duplicates_keep_the_first_of_a_group():
    texts = ["Tom has 3 red apples and 4 green apples.", "Tom has 3 red apples and 4 green apples!",
             "A train travels 60 miles in 2 hours."]
    assert near_duplicates(texts, n=3, threshold=0.8) == {1: (0, 1.0)}
