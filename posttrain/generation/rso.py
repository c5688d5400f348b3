"""Statistical rejection sampling (RSO, Liu et al. 2024, docs/methods.md "RSO") and the pair construction
after it.

Everything here is a pure function of candidate rewards (and a numpy Generator): the sampler that
produces candidates and the reward that scores them live elsewhere (generation/sampler.py, rewards/).

- `rso_accept`: accept up to `num_samples` candidates so they follow pi_r ∝ pi_sft · exp(r / beta).
  Each round: r_max = max reward of the REMAINING candidates; every remaining candidate, in order, is
  accepted iff u < exp((r - r_max) / beta), u ~ U[0, 1]; stop as soon as enough are accepted; remove the
  accepted ones. The best remaining candidate is always accepted, so a round accepts ≥ 1 and the loop
  ends after at most len(pool) rounds; an emptied pool returns what was accepted (`exhausted`).
- selections: "rso" (the above), "sft_sample_rank" (beta → ∞: the first num_samples candidates, the
  SLiC baseline), "best_of_n" (beta → 0 made explicit: the best candidate against the others).
- pairings: "first_round" (random disjoint pairs of the accepted samples, each labelled by reward)
  and "tournament" (a knockout: n - 1 labelled pairs, winners advance). Ties carry no preference and
  are dropped (counted).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np

SELECTIONS = ("rso", "sft_sample_rank", "best_of_n")
PAIRINGS = ("first_round", "tournament")


@dataclass
class AcceptStats:
    candidates: int = 0
    unique: int = 0
    accepted: int = 0
    rounds: int = 0
    exhausted: bool = False  # the pool emptied before num_samples were accepted


def dedupe(keys: Sequence[Hashable] | None, n: int) -> list[int]:
    """Indices of the first occurrence of each key (identical token ids are one candidate)."""
    if keys is None:
        return list(range(n))
    if len(keys) != n:
        raise ValueError(f"{len(keys)} keys for {n} candidates")
    seen, out = set(), []
    for i, k in enumerate(keys):
        if k not in seen:
            seen.add(k)
            out.append(i)
    return out


def rso_accept(rewards: Sequence[float], beta: float, num_samples: int, rng: np.random.Generator,
               keys: Sequence[Hashable] | None = None) -> tuple[list[int], AcceptStats]:
    """Indices (into `rewards`) of the accepted candidates, in acceptance order, and the stats."""
    if not beta > 0:
        raise ValueError(f"rso beta must be > 0, got {beta} (use selection 'best_of_n' for beta -> 0)")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    r = [float(x) for x in rewards]
    if any(not math.isfinite(x) for x in r):
        raise ValueError("rso_accept: rewards must be finite")
    pool = dedupe(keys, len(r))
    stats = AcceptStats(candidates=len(r), unique=len(pool))
    accepted: list[int] = []
    while len(accepted) < num_samples and pool:
        stats.rounds += 1
        r_max = max(r[i] for i in pool)
        u = rng.random(len(pool))
        taken = set()
        for j, i in enumerate(pool):
            if u[j] < math.exp((r[i] - r_max) / beta):
                accepted.append(i)
                taken.add(i)
                if len(accepted) == num_samples:
                    break
        pool = [i for i in pool if i not in taken]
    stats.accepted = len(accepted)
    stats.exhausted = len(accepted) < num_samples
    return accepted, stats


def select(rewards: Sequence[float], selection: str, num_samples: int, rng: np.random.Generator, *,
           beta: float = 0.5, keys: Sequence[Hashable] | None = None) -> tuple[list[int], AcceptStats]:
    """Candidates to pair, by selection rule (see the module docstring)."""
    if selection == "rso":
        return rso_accept(rewards, beta, num_samples, rng, keys)
    pool = dedupe(keys, len(rewards))
    stats = AcceptStats(candidates=len(rewards), unique=len(pool))
    if selection == "sft_sample_rank":
        out = pool[:num_samples]
    elif selection == "best_of_n":
        best = max(pool, key=lambda i: rewards[i]) if pool else None
        out = [] if best is None else [best] + [i for i in pool if i != best][:num_samples - 1]
    else:
        raise ValueError(f"unknown selection {selection!r}; choose from {', '.join(SELECTIONS)}")
    stats.accepted, stats.rounds, stats.exhausted = len(out), 1, len(out) < num_samples
    return out, stats


def pair_up(indices: Sequence[int], rewards: Sequence[float], pairing: str, rng: np.random.Generator,
            *, anchor_first: bool = False) -> tuple[list[tuple[int, int]], int]:
    """(chosen, rejected) index pairs labelled by reward, and the number of tied pairs dropped.

    `anchor_first` pairs the first index against every other one (best-of-n: best vs the rest)."""
    idx = list(indices)
    pairs, ties = [], 0

    def label(a: int, b: int) -> int | None:
        nonlocal ties
        if rewards[a] == rewards[b]:
            ties += 1
            return None
        pairs.append((a, b) if rewards[a] > rewards[b] else (b, a))
        return pairs[-1][0]

    if anchor_first:
        for b in idx[1:]:
            label(idx[0], b)
        return pairs, ties
    if pairing == "first_round":
        idx = [idx[i] for i in rng.permutation(len(idx))]
        for a, b in zip(idx[0::2], idx[1::2]):
            label(a, b)
    elif pairing == "tournament":
        idx = [idx[i] for i in rng.permutation(len(idx))]
        while len(idx) > 1:
            nxt = [idx[-1]] if len(idx) % 2 else []  # odd one out gets a bye
            for a, b in zip(idx[0::2], idx[1::2]):
                w = label(a, b)
                nxt.append(w if w is not None else (a if rng.random() < 0.5 else b))
            idx = nxt
    else:
        raise ValueError(f"unknown pairing {pairing!r}; choose from {', '.join(PAIRINGS)}")
    return pairs, ties
