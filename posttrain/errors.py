"""Errors raised for user mistakes. Each names where the problem is, so no user ever reads a torch trace."""
from __future__ import annotations


class PosttrainError(Exception):
    """Base for every error caused by user input (recipes, data, model names)."""


class RecipeError(PosttrainError):
    """A recipe or override is invalid; the message names the key and the allowed values."""


class ModelError(PosttrainError):
    """A model name, folder or installation problem; the message says how to fix it."""


class DataError(PosttrainError):
    """Bad data: the message names the file, the line (or row) and the field."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.message, self.file, self.line, self.field = message, file, line, field
        where = []
        if file is not None:
            where.append(f"{file}:{line}" if line is not None else str(file))
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)

    def under(self, key: str) -> "DataError":
        """The same error with its field named as the recipe key it came from (`data.train` + `format`)."""
        return DataError(self.message, file=self.file, line=self.line,
                         field=f"{key}.{self.field}" if self.field else key)


class TrainingError(PosttrainError):
    """Training had to stop (e.g. a non-finite loss); the message names the step and the last good
    checkpoint."""
