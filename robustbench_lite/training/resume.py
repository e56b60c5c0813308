"""Stopping and resuming: the state file next to a checkpoint, and SIGINT/SIGTERM between steps."""

from __future__ import annotations

import hashlib
import json
import signal
import threading
from pathlib import Path
from typing import Any

import torch

from robustbench_lite.errors import RobustEvalError

STATE_FORMAT = "robustbench_lite-train-state"


def state_path(checkpoint: Path) -> Path:
    """The resume state written next to a checkpoint while it trains (removed when it is done)."""
    return checkpoint.with_name(checkpoint.name + ".resume")


def fingerprint(run: dict[str, Any]) -> str:
    """Short hash of what defines a run: a state file is resumed only by the run that wrote it."""
    return hashlib.sha256(json.dumps(run, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_state(path: Path, run_id: str) -> dict[str, Any]:
    """A resume state file, as data only, for this very run."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read is a bad state file
        raise RobustEvalError(f"resume state {path} is damaged ({type(exc).__name__}); delete it to start "
                              "over") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise RobustEvalError(f"{path} is not a robust-eval training state; delete it to start over")
    if state.get("run") != run_id:
        raise RobustEvalError(f"resume state {path} was written by a run with other settings (model, data, recipe, "
                              "defences or seed); rerun with the same options, or delete it to start over")
    return state


class StopRequest:
    """SIGINT/SIGTERM during training set a flag; the loop stops at the next step boundary.

    Stopping between steps (never inside one) is what makes the saved resume state consistent, so
    every further signal is absorbed (with a line saying so) until the state is written and the
    handlers are restored: a second Ctrl-C 50 ms after the first cannot cut a step or the write in
    half. (SIGKILL cannot be caught; the atomic write leaves the previous state file then.)
    """

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C: already stopping; never cut the step or the state write in half
            import sys

            print("robust-eval: already stopping: finishing the step and writing the resume state",
                  file=sys.stderr, flush=True)
            return
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
