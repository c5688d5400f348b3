"""Evaluation: answer extraction and grading (math, NLU, tool calls, win rate), reports."""
from posttrain.eval.answers import (accuracy, answers_match, extract_answer, final_answers, gold_answer, grade,
                                    math_equal, normalize_answer)

__all__ = ["accuracy", "answers_match", "extract_answer", "final_answers", "gold_answer", "grade", "math_equal",
           "normalize_answer"]
