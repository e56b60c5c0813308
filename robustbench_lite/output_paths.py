"""Output paths checked before any work starts: a run never finishes only to find it cannot write.

Every file a command will write (``--json``, ``--html``, ``--junit``, ``--records``, ``report -o``,
``train --output``...) is checked when the command line is parsed: not empty, not a folder, no
regular file where a folder must be, a folder that exists or can be made and is writable, the file
itself writable when it exists. :func:`check_distinct` then refuses two outputs on one file
(``--json X --html X`` would replace the results with the page) and an output over an input
(``report a.json -o a.json``). Each refusal is one line naming the flag, the path, what is wrong and
the fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from robustbench_lite.errors import RobustEvalError


def check_output(path: str | os.PathLike[str], flag: str, *, folder: bool = False) -> Path:
    """``path`` as a :class:`Path`, when ``flag`` can write there; else a one-line :class:`RobustEvalError`.

    Args:
        path: where the command will write.
        flag: the option that named it, for the message (``--html``).
        folder: the path is a folder the command writes into (``--output-dir``), not a file.
    """
    text = os.fspath(path)
    kind = "folder" if folder else "file"
    if not text.strip():
        raise RobustEvalError(f"{flag} is empty; give a {kind} path (or leave {flag} out)")
    p = Path(text)
    if not folder and (text.endswith(("/", os.sep)) or p.is_dir()):
        raise RobustEvalError(f"{flag} {text} is a folder; give a file path (a name inside it)")
    if folder and p.exists() and not p.is_dir():
        raise RobustEvalError(f"{flag} {text} is a file, not a folder; give a folder path")
    ancestor = (p if folder else p.parent).absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RobustEvalError(f"{flag} {text}: {ancestor} is a file, so no folder can be made there; "
                              f"choose another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RobustEvalError(f"{flag} {text}: the folder {ancestor} is not writable; choose a path in a folder "
                              "you can write to")
    if not folder and p.exists() and not os.access(p, os.W_OK):
        raise RobustEvalError(f"{flag} {text} exists and is read-only; choose another path or make it writable")
    return p


def check_distinct(outputs: Mapping[str, str | os.PathLike[str] | None],
                   inputs: Mapping[str, str | os.PathLike[str] | None] | None = None) -> None:
    """Refuse two outputs on one file, or an output over an input, in one line (flags named)."""
    seen: dict[Path, str] = {}
    for flag, path in (inputs or {}).items():
        if path is not None and os.fspath(path).strip():
            seen.setdefault(_key(path), flag)
    for flag, path in outputs.items():
        if path is None:
            continue
        key = _key(path)
        if key in seen:
            other = seen[key]
            is_input = inputs is not None and other in inputs
            raise RobustEvalError(
                f"{flag} {os.fspath(path)} is also {'the input' if is_input else 'the path of'} {other}: writing it "
                f"would replace {'what it reads' if is_input else 'the other output'}; give {flag} its own path")
        seen[key] = flag


def _key(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))
