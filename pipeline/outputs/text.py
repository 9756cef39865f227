"""Header values in messages. A series description, a series number or a UID is data: printed raw, a newline in it
would forge a second ``error:`` line and a NUL or an escape sequence would reach the terminal. :func:`one_line`
makes it one bounded line of printable text."""

from __future__ import annotations

# Long enough for any valid DICOM value of a name or description (64 characters) with its escapes.
MAX_TEXT_LENGTH = 128


def one_line(value: object, max_length: int = MAX_TEXT_LENGTH) -> str:
    """``value`` as printable text on one line, at most ``max_length`` characters.

    A value of printable characters only is returned unchanged. A newline, NUL, escape or any other unprintable
    character is written as Python writes it in a string literal (``\\n``, ``\\x00``, ``\\x1b``); a longer text
    is cut and ends with ``...``.
    """
    text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in str(value))
    return text if len(text) <= max_length else text[: max_length - 3] + "..."
