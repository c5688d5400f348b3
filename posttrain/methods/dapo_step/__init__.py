"""Step-level DAPO (docs/methods.md "Direct Advantage Policy Optimization"), the method in one package:

- `method.py`: the params, the six pipeline stages, the critic's training run, the actor's objective and
  batches, `build` and SPEC;
- `data.py`: the data stages' files (states, rollouts and MC targets, critic features, calibration,
  advantages and the spread filter, pi_ref's log-probs);
- `steps.py`: a response split into reasoning steps at newline tokens.
The sample stage is the one online methods share (posttrain/methods/sampling.py); the losses are pure
functions in posttrain/losses/advantage.py.
"""
from __future__ import annotations

from posttrain.methods.dapo_step.method import SPEC

__all__ = ["SPEC"]
