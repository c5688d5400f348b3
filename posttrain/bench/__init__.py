"""Experiments that check a method's claim in a setting small enough to run on a laptop CPU.

- `noisy_bandit`: DPO / cDPO / rDPO / IPO under random preference-label flips, in the log-linear
  bandit of the rDPO paper's theory (METHODS.md section 1, claim (a)).
"""
