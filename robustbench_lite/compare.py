"""Comparison tables: several results (checkpoints evaluated alike, or saved results) side by side.

One row per headline metric (:func:`robustbench_lite.gates.headline`: each suite's, suite by
suite in order), one column per run, and each run's delta against the first. ``robust-eval
compare`` and ``robust-eval sweep`` print and write these tables.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.formatting import format_value
from robustbench_lite.gates import headline

FORMATS = (".md", ".csv", ".json", ".txt")


@dataclass
class Row:
    suite: str
    label: str
    path: str
    unit: str
    higher_is_better: bool
    values: list[float | None]

    @property
    def metric(self) -> str:
        return f"{self.suite} {self.label}"

    def delta(self, i: int) -> float | None:
        first, value = self.values[0], self.values[i]
        if first is None or value is None or not (math.isfinite(first) and math.isfinite(value)):
            return None
        return value - first


@dataclass
class Comparison:
    """Runs side by side; ``info`` rows (dataset, defence, training time...) are text."""

    labels: list[str]
    rows: list[Row]
    info: dict[str, list[str]] = field(default_factory=dict)

    # -- formatting --------------------------------------------------------------------------------

    def _delta_text(self, row: Row, i: int) -> str:
        d = row.delta(i)
        if d is None:
            return "n/a"
        if row.unit == "fraction":
            return f"{100 * d:+.1f} pts"
        first = row.values[0]
        if row.unit in ("ms", "MB", "count") and first:
            return f"{d / first:+.0%}"
        return f"{d:+.3g}"

    def cells(self) -> tuple[list[str], list[list[str]]]:
        """Header and body of the table (deltas in parentheses after the first column)."""
        header = ["metric", *self.labels]
        body = [[name, *values] for name, values in self.info.items()]
        for row in self.rows:
            cells = [format_value(row.values[0], row.unit)]
            for i in range(1, len(self.labels)):
                cells.append(f"{format_value(row.values[i], row.unit)} ({self._delta_text(row, i)})")
            body.append([row.metric, *cells])
        return header, body

    def to_text(self) -> str:
        header, body = self.cells()
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *body]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines) + f"\n(deltas against {self.labels[0]}; pts = percentage points)\n"

    def to_markdown(self) -> str:
        header, body = self.cells()
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in body]
        return "\n".join(out) + f"\n\nDeltas against {self.labels[0]}; pts = percentage points.\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["metric", "path", "unit", *self.labels, *[f"delta {lbl}" for lbl in self.labels[1:]]])
        for name, values in self.info.items():
            w.writerow([name, "", "text", *values, *[""] * (len(self.labels) - 1)])
        for row in self.rows:
            w.writerow([row.metric, row.path, row.unit, *["" if v is None else v for v in row.values],
                        *["" if (d := row.delta(i)) is None else d for i in range(1, len(self.labels))]])
        return buf.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.labels, "baseline": self.labels[0], "info": self.info,
                "metrics": [{"metric": r.metric, "path": r.path, "unit": r.unit,
                             "higher_is_better": r.higher_is_better, "values": r.values,
                             "deltas": [r.delta(i) for i in range(1, len(self.labels))]} for r in self.rows]}

    def write(self, path: str | Path) -> Path:
        """Write the table as Markdown, CSV, JSON or text, by the file's extension (atomically)."""
        from robustbench_lite.files import atomic_write

        path = Path(path)
        render = {".md": self.to_markdown, ".csv": self.to_csv, ".txt": self.to_text,
                  ".json": lambda: json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"}
        if path.suffix not in render:
            raise RobustEvalError(f"cannot write a table as '{path.suffix or path.name}'; "
                                  f"use one of {', '.join(FORMATS)}")
        text = render[path.suffix]()
        return atomic_write(path, lambda f: f.write(text))


def _info(run: Mapping[str, Any]) -> dict[str, str]:
    ckpt = run.get("checkpoint") if isinstance(run.get("checkpoint"), Mapping) else {}
    defence = ckpt.get("defence") if isinstance(ckpt.get("defence"), Mapping) else {}
    seconds = ckpt.get("train_seconds")
    return {
        "model": str(run.get("model")),
        "dataset": str(run.get("dataset")),
        "test images": str(run.get("n_examples")),
        "defence": str(defence.get("label", "—")) if ckpt else "—",
        "init": str(ckpt.get("init") or ("imagenet" if ckpt.get("pretrained") else "scratch")) if ckpt else "—",
        "train minutes": f"{seconds / 60:.1f}" if isinstance(seconds, (int, float)) else "—",
    }


def unique_labels(labels: Sequence[str]) -> list[str]:
    out: list[str] = []
    for label in labels:
        name, k = label, 2
        while name in out:
            name, k = f"{label} #{k}", k + 1
        out.append(name)
    return out


def compare(runs: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> Comparison:
    """The comparison table of ``runs`` (results dicts), deltas against the first."""
    if not runs:
        raise RobustEvalError("nothing to compare; pass at least one checkpoint or results file")
    heads = [{(h.suite, h.label): h for h in headline(r)} for r in runs]
    keys: list[tuple[str, str]] = []
    for hs in heads:
        keys += [k for k in hs if k not in keys]
    rows = []
    for key in keys:
        first = next(hs[key] for hs in heads if key in hs)
        rows.append(Row(key[0], key[1], first.path, first.unit, first.higher_is_better,
                        [hs[key].value if key in hs else None for hs in heads]))
    infos = [_info(r) for r in runs]
    info = {k: [i[k] for i in infos] for k in infos[0]}
    info = {k: v for k, v in info.items() if any(x != "—" for x in v)}
    return Comparison(unique_labels(list(labels)), rows, info)
