"""Evaluation: math, NLU, tool calls, win rate, reports. The answer rule they grade by is
:mod:`posttrain.data.answers`."""
