"""The errors a user can act on, told apart from programming errors through MONAI's wrapping of config errors."""

from __future__ import annotations


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
