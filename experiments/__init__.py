"""Experiments that test a method's claim and write docs/results. They are part of the checkout, not of the
installed `posttrain` package: they read the checkout's recipes/ and write its docs/results/, and run from
the checkout root as `python -m experiments.<name> --help`.

- `noisy_bandit`: DPO / cDPO / rDPO / IPO under preference-label flips in the rDPO paper's log-linear
  bandit (the simulation itself is `posttrain.bandit`); `noisy_lm`: the same on the embedded model.
- `rso`, `rpo`, `ppo_nlu`: the RSO, RPO and PPO-for-NLU experiments; `math_synth`: SFT on gold vs synthetic
  solutions; `ift`: IFT vs SFT; `inpo_tabular`, `inpo_lm`: INPO in a tabular game and on the embedded model.
- `demo_seeds`: the demo's embedded-model run over several seeds (docs/results/demo.md).
"""
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
RECIPES = CHECKOUT / "recipes"
