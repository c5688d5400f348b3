"""A reward for tests: counts a letter, so random tiny-model text gets varied, untied scores."""


class LetterReward:
    name = "letter"

    def __init__(self, letter: str = "e"):
        self.letter = letter

    def score(self, prompts, completions, meta=None):
        return [float(c.count(self.letter)) + 0.01 * len(c) for c in completions]


class ConstantReward:
    name = "constant"

    def score(self, prompts, completions, meta=None):
        return [1.0] * len(completions)


class VowelReward:
    """Share of vowels among the completion's characters: dense, so a tiny random model can learn it."""
    name = "vowels"

    def score(self, prompts, completions, meta=None):
        return [sum(ch in "aeiou" for ch in c) / max(len(c), 1) for c in completions]


class LetterPreference:
    """A pairwise oracle for tests: prefers the completion LetterReward scores higher (0.5 on a tie)."""
    name = "letter_preference"

    def compare(self, prompts, first, second, meta=None):
        r = LetterReward()
        a, b = r.score(prompts, first), r.score(prompts, second)
        return [1.0 if x > y else 0.0 if x < y else 0.5 for x, y in zip(a, b)]

    def score(self, prompts, completions, meta=None):
        raise ValueError("pairwise only")


class EvenLetterReward:
    """A 0/1 'correctness' for tests: 1 when the completion holds an even number of the letter."""
    name = "even_letter"

    def __init__(self, letter: str = "e"):
        self.letter = letter

    def score(self, prompts, completions, meta=None):
        return [float(c.count(self.letter) % 2 == 0) for c in completions]
