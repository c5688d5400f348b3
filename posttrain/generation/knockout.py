"""INPO's O(K) knockout (Zhang et al., ICLR 2025; docs/methods.md "INPO and iterative DPO"): the best and
the worst of K responses under a pairwise oracle, without the K(K-1)/2 comparisons of a full round robin.

First round: the K responses in disjoint pairs. Winners play winners until one is left (the best),
losers play losers until one is left (the worst); a response without an opponent (odd count) goes on in
both brackets. Final: best vs worst; the pair is kept only if the best wins it. Under a transitive
oracle the true best never loses and the true worst never wins, so they come out (a test). Calls:
floor(K/2) + (ceil(K/2) - 1) + (ceil(K/2) - 1) + 1 <= 1.5 K. Named "knockout", not RSO's "tournament"
pairing (posttrain/generation/rso.py), which pairs every match of a single-elimination bracket.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass
class KnockoutResult:
    best: int
    worst: int
    kept: bool  # the best beat the worst in the final
    calls: int  # oracle comparisons made


def knockout(k: int, beats: Callable[[Sequence[tuple[int, int]]], Sequence[bool]]) -> KnockoutResult:
    """Indices of the best and the worst of `k` responses.

    `beats(pairs)` answers a whole round at once (one batched oracle call per round): for each (a, b),
    whether a is preferred to b (a tie is not a win). Rounds are in index order, so the result is a pure
    function of the oracle's answers."""
    if k < 2:
        raise ValueError(f"knockout needs at least 2 responses, got {k}")
    calls = 0

    def play(pairs: list[tuple[int, int]]) -> list[bool]:
        nonlocal calls
        calls += len(pairs)
        out = list(beats(pairs))
        if len(out) != len(pairs):
            raise ValueError(f"the oracle answered {len(out)} of {len(pairs)} comparisons")
        return out

    first = [(a, a + 1) for a in range(0, k - 1, 2)]
    wins = play(first)
    winners = [a if w else b for (a, b), w in zip(first, wins)]
    losers = [b if w else a for (a, b), w in zip(first, wins)]
    if k % 2:
        winners.append(k - 1)
        losers.append(k - 1)

    def bracket(pool: list[int], keep_winner: bool) -> int:
        while len(pool) > 1:
            pairs = [(pool[i], pool[i + 1]) for i in range(0, len(pool) - 1, 2)]
            res = play(pairs)
            nxt = [(a if w else b) if keep_winner else (b if w else a) for (a, b), w in zip(pairs, res)]
            pool = nxt + ([pool[-1]] if len(pool) % 2 else [])
        return pool[0]

    best, worst = bracket(winners, True), bracket(losers, False)
    kept = best != worst and play([(best, worst)])[0]
    return KnockoutResult(best, worst, kept, calls)
