"""The one exception type for mistakes a user can make (bad flag, missing file, bad checkpoint).

The CLI prints it on one line and exits 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RobustEvalError(ValueError):
    """A user error: the message names the bad value, the valid choices and the fix."""


class GateFailure(RuntimeError):
    """Raised when robustness gates fail (exit code 1 in the CLI)."""
