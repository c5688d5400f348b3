"""Report writers keep the hand-written reading; code never writes one."""
from experiments.noisy_lm import kept_reading
from posttrain.bandit import SECTION_B


def test_noisy_lm_keeps_the_hand_written_reading():
    doc = (f"# head\n\n{SECTION_B}\n\n| table |\n\n"
           "Reading: DPO fell, rDPO fell more (one seed).\nSecond line.\n\n![png](x)\n")
    assert kept_reading(doc) == "Reading: DPO fell, rDPO fell more (one seed).\nSecond line."
    assert "pending" in kept_reading("# head only\n")
    assert "pending" in kept_reading(f"{SECTION_B}\n\n| table |\n")
