"""Preference data stats (no model: the encoding only)."""
from types import SimpleNamespace

from posttrain.data.readers import RecordList, invalid_rows
from posttrain.data.records import PreferencePair
from posttrain.errors import DataError
from posttrain.methods.preference import encode


def test_skipped_rows_reach_the_data_stats(tok):
    pair = PreferencePair([{"role": "user", "content": "2+2?"}], "4", "5")
    skipped = [DataError("not a pair", file="p.jsonl", line=3),
               DataError("not a pair", file="p.jsonl", line=7),
               DataError("broken JSON", file="p.jsonl", line=9)]
    data = SimpleNamespace(max_length=64, max_prompt_length=None, on_overflow="error")
    feats, stats = encode(RecordList([pair], skipped=skipped), tok, data)
    assert len(feats) == 1 and stats["examples"] == 1
    assert stats["invalid_rows"] == {"not a pair": 2, "broken JSON": 1}
    _, clean = encode([pair], tok, data)
    assert "invalid_rows" not in clean and invalid_rows([pair]) == {}
