"""The errors a user can act on, told apart from programming errors through MONAI's wrapping of config errors."""

from __future__ import annotations

import sys
from types import TracebackType


class UserError(Exception):
    """A fault the user can fix: a missing file, a bad option, an unusable input.

    The message says what is wrong, which file or option, and what to do; ``python -m pipeline`` prints it as
    ``error: <message>`` and exits 1, without a traceback. Every such error of the package derives from this
    class as well as from the built-in error it is a kind of.
    """


def find_user_error(error: BaseException) -> UserError | None:
    """The first ``UserError`` in the chain of ``error`` (its causes and contexts); ``None`` if there is none.

    MONAI's config parser re-raises an error of an expression or component as ``RuntimeError("Failed to
    evaluate ...")``, from the original or while handling it, so the original is found here to print its message.
    A context hidden with ``raise ... from None`` is not searched.
    """
    current: BaseException | None = error
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError):
            return current
        seen.add(id(current))
        if current.__cause__ is not None:
            current = current.__cause__
        else:
            current = None if current.__suppress_context__ else current.__context__
    return None


def report_user_errors_briefly() -> None:
    """Make an uncaught ``UserError`` end the program with one ``error: <message>`` line on stderr.

    ``python -m pipeline`` prints its errors so itself; this is for ``python -m monai.bundle run`` with the bundle's
    configs, where MONAI wraps the error of a config item in its own, and Python would print both tracebacks and
    the item's whole config before the message. Any other uncaught exception keeps its traceback.
    """
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
        user_error = find_user_error(error)
        if user_error is None:
            previous(kind, error, traceback)
        else:
            print(f"error: {user_error}", file=sys.stderr)

    sys.excepthook = hook
