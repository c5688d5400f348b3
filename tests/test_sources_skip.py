"""`skip` + `limit` select a window of a data file (hold out its tail for evaluation)."""
import json

from posttrain.config import DataSource
from posttrain.tasks.sources import load_source


def test_skip_and_limit_select_a_window(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": str(i)}) + "\n" for i in range(10)))
    got = lambda **kw: [r.answer for r in load_source(DataSource(path=str(f), **kw), "prompt")]  # noqa: E731
    assert got(limit=3) == ["0", "1", "2"]
    assert got(skip=7) == ["7", "8", "9"]
    assert got(skip=2, limit=3) == ["2", "3", "4"]
    assert got(skip=9, limit=5) == ["9"]
    assert got(skip=12) == []
