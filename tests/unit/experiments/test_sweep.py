"""experiments/sweep.py: a report page's hand-written reading is kept when the page is rewritten."""
from experiments.sweep import kept_reading, publish


def test_kept_reading(tmp_path):
    p = tmp_path / "r.md"
    assert kept_reading(p) == []
    p.write_text("# t\n\n| a |\n\n## Reading\n\n- hand written\n")
    assert kept_reading(p) == ["## Reading\n\n- hand written", ""]
    p.write_text("# t\n")
    assert kept_reading(p) == []


def test_publish_keeps_the_hand_written_reading_of_the_page_it_replaces(tmp_path):
    p = tmp_path / "r.md"
    publish(p, "# t\n\n| old |\n")
    assert p.read_text() == "# t\n\n| old |\n"
    p.write_text("# t\n\n| old |\n\n## Reading\n\n- hand written\n")
    publish(p, "# t\n\n| new |\n")
    assert p.read_text() == "# t\n\n| new |\n\n## Reading\n\n- hand written\n"
    publish(p, "# t\n\n| newer |\n")  # twice: kept once, not doubled
    assert p.read_text().count("## Reading") == 1 and "| newer |" in p.read_text()
