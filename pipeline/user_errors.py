"""Tell the errors a user can act on from programming errors, through MONAI's wrapping of config errors."""

from __future__ import annotations


def find_user_error(error: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first error of ``kinds`` in the chain ``error``, ``error.__cause__``, ...; ``None`` if there is none.

    MONAI's config parser re-raises an error of an expression or component as ``RuntimeError("Failed to
    evaluate ...")`` from the original, so an entry point finds the original here to print its one line.
    """
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, kinds):
            return current
        current = current.__cause__
    return None
