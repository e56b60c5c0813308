"""The dispatcher: ``robust-eval [COMMAND] ...`` -> the command module's ``run(argv)``, errors -> exit codes."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from robustbench_lite.errors import GateFailure, RobustEvalError

#: Subcommand -> module under robustbench_lite.commands (imported on use: `list` stays fast).
COMMANDS = {"eval": "eval", "train": "train", "compare": "compare", "sweep": "sweep", "list": "list",
            "report": "report", "gate": "gate", "history": "history", "plan": "plan",
            "compress": "compress", "monitor": "monitor", "audit-labels": "audit"}
#: Subcommands that run under torchrun (the others refuse).
DISTRIBUTED = ("eval", "train")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else "eval"
    rest = argv[1:] if argv and argv[0] in COMMANDS else argv
    debug = "--debug" in rest
    try:
        from robustbench_lite.distributed import launched

        if launched() and command not in DISTRIBUTED:
            raise RobustEvalError(f"'{command}' does not run under torchrun; launch the evaluation or 'train' "
                                  "with torchrun (robust-eval sweep --launcher 'torchrun ...' hands its cells to it)")
        return importlib.import_module(f"robustbench_lite.commands.{COMMANDS[command]}").run(rest)
    except RobustEvalError as exc:
        if debug:
            raise
        print(f"robust-eval: error: {exc}", file=sys.stderr)
        return 2
    except GateFailure as exc:
        print(f"robust-eval: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("robust-eval: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
