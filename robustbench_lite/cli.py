"""The ``robust-eval`` entry point; the subcommands live in :mod:`robustbench_lite.commands`."""

from __future__ import annotations

import sys

from robustbench_lite.commands.eval import parser as eval_parser
from robustbench_lite.commands.main import main

__all__ = ["eval_parser", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
