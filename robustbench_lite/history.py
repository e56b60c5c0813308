"""Run history: every evaluation appends one row to ``$ROBUST_EVAL_HOME/history.sqlite``.

The row holds the run's identity (model, dataset, suites, seed, images), its headline metrics,
its gate outcome, where its JSON/HTML went, and the whole results JSON, so a past run can be
listed (``robust-eval history``), re-rendered (``robust-eval report run:ID``) and used as a gate
baseline (``--baseline run:ID``, or just ``--baseline ID``) even when its files are gone.

One transaction per run, written after the run finished (and after its files were written): an
interrupted run leaves no row, and a crash mid-insert is rolled back by SQLite.
"""

from __future__ import annotations

import fnmatch
import json
import re
import sqlite3
import time
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustbench_lite.errors import RobustEvalError

DB_NAME = "history.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    model TEXT NOT NULL,
    dataset TEXT NOT NULL,
    suites TEXT NOT NULL,
    n_examples INTEGER,
    seed INTEGER,
    checkpoint TEXT,
    json_path TEXT,
    html_path TEXT,
    gates_total INTEGER NOT NULL DEFAULT 0,
    gates_failed INTEGER NOT NULL DEFAULT 0,
    headline TEXT NOT NULL,
    results TEXT NOT NULL
)
"""
_RUN_RE = re.compile(r"^(?:run:)?(\d+)$")


def db_path() -> Path:
    from robustbench_lite.data import cache_home

    return cache_home() / DB_NAME


#: Seconds a run waits for a history another program holds locked before it is left out of it.
RECORD_WAIT = 5.0


def _connect(path: Path | None = None, timeout: float = 30) -> sqlite3.Connection:
    path = path or db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, timeout=timeout)
        conn.execute(_SCHEMA)
    except sqlite3.DatabaseError as exc:
        raise RobustEvalError(f"run history {path} is unusable ({exc}); move it away to start a new one") from None
    conn.row_factory = sqlite3.Row
    return conn


@dataclass
class Run:
    """One history row (without the full results; :func:`get` loads those)."""

    id: int
    created: float
    model: str
    dataset: str
    suites: list[str]
    n_examples: int | None
    seed: int | None
    checkpoint: str | None
    json_path: str | None
    html_path: str | None
    gates_total: int
    gates_failed: int
    headline: dict[str, list[Any]]  # "suite label" -> [value, unit]

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.created))


def record(results: Mapping[str, Any], json_path: str | Path | None = None,
           html_path: str | Path | None = None, path: Path | None = None, timeout: float = 30) -> int:
    """Append a finished run (its results JSON dict) in one transaction; returns its id."""
    from robustbench_lite.gates import headline

    heads = {f"{h.suite} {h.label}": [h.value, h.unit] for h in headline(results)}
    gates = results.get("gates") if isinstance(results.get("gates"), Mapping) else {}
    suites = [s for s in results.get("suites", []) if isinstance(s, str)]
    row = (
        time.time(), str(results.get("model")), str(results.get("dataset")), "," + ",".join(suites) + ",",
        results.get("n_examples"), results.get("seed"), (results.get("checkpoint") or {}).get("path"),
        None if json_path is None else str(Path(json_path).resolve()),
        None if html_path is None else str(Path(html_path).resolve()),
        int(gates.get("total", 0)), int(gates.get("failed", 0)),
        json.dumps(heads), json.dumps(results, allow_nan=False),
    )
    with closing(_connect(path, timeout)) as conn, conn:  # `with conn`: commit, or roll back on any error
        cursor = conn.execute(
            "INSERT INTO runs (created, model, dataset, suites, n_examples, seed, checkpoint, json_path, html_path, "
            "gates_total, gates_failed, headline, results) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        assert cursor.lastrowid is not None
        return int(cursor.lastrowid)


def try_record(results: Mapping[str, Any], json_path: str | Path | None = None,
               html_path: str | Path | None = None, path: Path | None = None) -> tuple[int | None, str | None]:
    """:func:`record`, best-effort: ``(id, None)``, or ``(None, why)`` when the history cannot take the run
    (locked by another program past :data:`RECORD_WAIT` seconds, damaged, a value SQLite cannot hold, a
    folder that cannot be written). A run is never lost, nor its exit code changed, for its history row."""
    try:
        return record(results, json_path, html_path, path, timeout=RECORD_WAIT), None
    except sqlite3.OperationalError as exc:
        locked = "locked" in str(exc)
        return None, (f"{path or db_path()} stayed locked by another program for {RECORD_WAIT:g} s" if locked
                      else f"{path or db_path()}: {exc}")
    except (sqlite3.Error, OverflowError, ValueError, OSError, RobustEvalError) as exc:
        return None, f"{path or db_path()}: {exc}"


def _run(row: sqlite3.Row) -> Run:
    return Run(id=row["id"], created=row["created"], model=row["model"], dataset=row["dataset"],
               suites=[s for s in row["suites"].split(",") if s], n_examples=row["n_examples"], seed=row["seed"],
               checkpoint=row["checkpoint"], json_path=row["json_path"], html_path=row["html_path"],
               gates_total=row["gates_total"], gates_failed=row["gates_failed"], headline=json.loads(row["headline"]))


def list_runs(model: str | None = None, dataset: str | None = None, suite: str | None = None,
              limit: int | None = 20, path: Path | None = None) -> list[Run]:
    """Runs newest first; ``model``/``dataset`` are fnmatch patterns, ``suite`` a suite the run ran."""
    if not (path or db_path()).exists():
        return []
    with closing(_connect(path)) as conn:
        rows = conn.execute(
            "SELECT id, created, model, dataset, suites, n_examples, seed, checkpoint, json_path, html_path, "
            "gates_total, gates_failed, headline FROM runs ORDER BY id DESC").fetchall()
    runs = [_run(r) for r in rows]
    runs = [r for r in runs if (model is None or fnmatch.fnmatchcase(r.model, model))
            and (dataset is None or fnmatch.fnmatchcase(r.dataset, dataset))
            and (suite is None or suite in r.suites)]
    return runs if limit is None else runs[:limit]


def get(run_id: int, path: Path | None = None) -> dict[str, Any]:
    """The results JSON dict of run ``run_id``."""
    db = path or db_path()
    row = None
    if db.exists():
        with closing(_connect(db)) as conn:
            row = conn.execute("SELECT results FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise RobustEvalError(f"no run {run_id} in the history ({db}); see 'robust-eval history' for run ids")
    return json.loads(row["results"])


def run_id(spec: str) -> int | None:
    """``run:12`` or ``12`` -> 12; anything else (a file path) -> None."""
    m = _RUN_RE.match(spec.strip())
    return int(m.group(1)) if m else None


def load_results(spec: str) -> tuple[dict[str, Any], str]:
    """A results JSON from ``run:ID``/``ID`` (history) or a file path; returns (results, label)."""
    from robustbench_lite.results import read_json

    rid = run_id(spec)
    if rid is not None:
        return get(rid), f"run:{rid}"
    return read_json(spec), str(spec)
