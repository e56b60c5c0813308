"""The one exception type for mistakes a user can make (bad flag, missing file, bad checkpoint).

The CLI prints it on one line and exits 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RobustEvalError(ValueError):
    """A user error: the message names the bad value, the valid choices and the fix."""


class GateFailure(RuntimeError):
    """Raised when robustness gates fail (exit code 1 in the CLI)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
