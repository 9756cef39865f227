"""The error a dataset raises when it cannot be prepared: every problem found, one line each."""

from collections.abc import Sequence


class DatasetError(ValueError):
    """A dataset that cannot be prepared.

    Args:
        problems: one line per problem, each naming the file (or folder) first and then the fault.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))
