"""The error a dataset raises when it cannot be prepared: every problem found, one line each."""

from collections.abc import Sequence

from pipeline.user_errors import UserError


class DatasetError(UserError, ValueError):
    """A dataset that cannot be prepared.

    Args:
        problems: one line per problem, each naming the file (or folder) first and then the fault.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        header = (
            [] if len(self.problems) == 1 else [f"{len(self.problems)} problems found; the dataset was not prepared:"]
        )
        super().__init__("\n".join(header + self.problems))
