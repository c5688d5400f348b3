"""Evaluation: answer extraction and scoring (math, NLU, tool calls, win rate), reports."""
from posttrain.eval.answers import accuracy, answers_match, extract_answer, is_correct, normalize_answer

__all__ = ["accuracy", "answers_match", "extract_answer", "is_correct", "normalize_answer"]
