"""The cyclic oracle (METHODS.md section 3): the documented rock-paper-scissors."""
from __future__ import annotations

import pytest

from posttrain.rewards.cyclic import MATRIX, CyclicPreference


def test_cyclic_oracle_is_the_documented_rock_paper_scissors():
    o = CyclicPreference(bounds=[3, 6])
    short, medium, long = "a b", "a b c d", "a b c d e f g"
    texts = [short, medium, long]
    got = [[o.compare(["q"], [x], [y])[0] for y in texts] for x in texts]
    assert got == [list(r) for r in MATRIX]
    assert all(MATRIX[i][j] + MATRIX[j][i] == 1 for i in range(3) for j in range(3))
    with pytest.raises(ValueError, match="pairwise only"):
        o.score(["q"], [short])
    with pytest.raises(ValueError, match="bounds"):
        CyclicPreference(bounds=[5, 2])
