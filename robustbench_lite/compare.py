"""Comparison tables: several results (checkpoints evaluated alike, or saved results) side by side.

One row per headline metric (:func:`robustbench_lite.gates.headline`: each suite's, suite by
suite in order), one column per run with the value and its 95% interval, and each run's delta
against the first. ``robust-eval compare`` and ``robust-eval sweep`` print and write these tables.

Each delta that has intervals is tested:

* **paired**, when both runs have per-image records (:mod:`robustbench_lite.records`) on the same
  images: McNemar's exact test for a recorded accuracy, the paired bootstrap over images for a
  number derived from several accuracies (a mean, mCE): both runs' conditions are resampled by one
  :class:`~robustbench_lite.statistics.Resampler` seeded by the first run's seed, so replicate ``r``
  of both runs is scored on the same drawn images, and the suite's ``derived`` turns them into the
  number.
* **unpaired**, when the images differ or records are missing: a delta counts as significant only
  if the two 95% intervals do not overlap. This is conservative: intervals can overlap while the
  difference is real (non-overlap corresponds to p well below 0.05), so an unmarked unpaired delta
  means "not shown", never "shown equal". Each run compared this way gets a footnote saying why.

Runs that are seeds of one recipe (:func:`recipe_key`) also get a column with their mean and
standard deviation over seeds.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics as stdlib_statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustbench_lite import paired, statistics
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.flips import FlipSet, flip_sets
from robustbench_lite.formatting import format_value
from robustbench_lite.gates import headline
from robustbench_lite.records import Records
from robustbench_lite.suites import incomparable

FORMATS = (".md", ".csv", ".json", ".txt")
#: The test of a delta between runs that could not be paired image by image.
UNPAIRED = "unpaired intervals"


@dataclass(frozen=True)
class DeltaTest:
    """Whether one delta against the first run is more than noise.

    Attributes:
        test: ``mcnemar``, ``paired bootstrap`` or ``unpaired intervals``.
        significant: p < 0.05 (paired), or the two 95% intervals do not overlap (unpaired).
        p_value: two-sided p-value; None for the unpaired check, which has none.
        ci: the 95% interval of the difference (paired tests only).
    """

    test: str
    significant: bool
    p_value: float | None = None
    ci: tuple[float, float] | None = None

    @classmethod
    def from_difference(cls, diff: statistics.Difference) -> DeltaTest:
        p = diff.p_value if math.isfinite(diff.p_value) else None
        ci = diff.ci if all(math.isfinite(c) for c in diff.ci) else None
        return cls(diff.test, diff.significant, p, ci)

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test, "p_value": self.p_value, "significant": self.significant,
                "ci": None if self.ci is None else list(self.ci)}


@dataclass
class Row:
    suite: str
    label: str
    path: str
    unit: str
    higher_is_better: bool
    values: list[float | None]
    #: each run's 95% interval (None: no interval)
    cis: list[tuple[float, float] | None] = field(default_factory=list)
    #: each run's delta test against the first (None for the first run, and where nothing was tested)
    tests: list[DeltaTest | None] = field(default_factory=list)
    #: per run, why its value is not the same quantity as the first run's (a mean over other conditions)
    incomparable: list[str | None] = field(default_factory=list)

    @property
    def metric(self) -> str:
        return f"{self.suite} {self.label}"

    def delta(self, i: int) -> float | None:
        if i < len(self.incomparable) and self.incomparable[i]:
            return None
        first, value = self.values[0], self.values[i]
        if first is None or value is None or not (math.isfinite(first) and math.isfinite(value)):
            return None
        return value - first

    def ci(self, i: int) -> tuple[float, float] | None:
        return self.cis[i] if i < len(self.cis) else None

    def test(self, i: int) -> DeltaTest | None:
        return self.tests[i] if i < len(self.tests) else None

    def spread(self, runs: Sequence[int]) -> tuple[float, float, int] | None:
        """Mean, sample standard deviation and count of ``runs``' values; None with fewer than 2."""
        values = [v for i in runs if (v := self.values[i]) is not None and math.isfinite(v)]
        if len(values) < 2:
            return None
        return stdlib_statistics.fmean(values), stdlib_statistics.stdev(values), len(values)


#: Flip-set lines per run in the text and Markdown tables (clean first, then the largest).
FLIP_ROWS = 8


@dataclass(frozen=True)
class SeedGroup:
    """Runs (column indices) trained with one recipe and different seeds (:func:`recipe_key`)."""

    runs: list[int]
    seeds: list[Any]


@dataclass
class Comparison:
    """Runs side by side; ``info`` rows (dataset, defence, training time...) are text.

    Attributes:
        unpaired: per run label, why its deltas could not be tested image by image.
        groups: seeds of one recipe, each shown as an extra mean ± sd column.
    """

    labels: list[str]
    rows: list[Row]
    info: dict[str, list[str]] = field(default_factory=dict)
    groups: list[SeedGroup] = field(default_factory=list)
    unpaired: dict[str, list[str]] = field(default_factory=dict)
    #: Per run after the first: its flip sets against the first (:mod:`robustbench_lite.flips`), on the
    #: conditions both recorded on the same images.
    flips: dict[str, list[FlipSet]] = field(default_factory=dict)
    classes: list[str] | None = None

    # -- formatting --------------------------------------------------------------------------------

    def _delta_text(self, row: Row, i: int) -> str:
        d = row.delta(i)
        if i < len(row.incomparable) and row.incomparable[i]:
            return "not comparable"
        if d is None:
            return "n/a"
        if row.unit == "fraction":
            return f"{100 * d:+.1f} pts"
        first = row.values[0]
        if row.unit in ("ms", "MB", "count") and first:
            return f"{d / first:+.0%}"
        return f"{d:+.3g}"

    def _value_text(self, row: Row, i: int) -> str:
        ci = row.ci(i)
        if ci is None or row.unit not in ("fraction", "ratio"):
            return format_value(row.values[i], row.unit)
        return statistics.interval_text(row.values[i], ci, row.unit)

    def group_header(self, group: SeedGroup) -> str:
        head = f"mean ± sd over seeds ({len(group.runs)})"
        return head if len(self.groups) == 1 else f"{head} of {', '.join(self.labels[i] for i in group.runs)}"

    @staticmethod
    def _spread_text(row: Row, group: SeedGroup) -> str:
        found = row.spread(group.runs)
        if found is None:
            return "n/a"
        mean, sd, _ = found
        if row.unit == "fraction":
            return f"{100 * mean:.1f}% ± {100 * sd:.1f}"
        if row.unit == "ratio":
            return f"{mean:.3f} ± {sd:.3f}"
        return f"{format_value(mean, row.unit)} ± {format_value(sd, row.unit)}"

    def cells(self) -> tuple[list[str], list[list[str]]]:
        """Header and body of the table (deltas in parentheses after the first column)."""
        header = ["metric", *self.labels, *[self.group_header(g) for g in self.groups]]
        body = []
        for name, values in self.info.items():
            common = [_common([values[i] for i in g.runs]) for g in self.groups]
            body.append([name, *values, *common])
        for row in self.rows:
            cells = [self._value_text(row, 0)]
            for i in range(1, len(self.labels)):
                test = row.test(i)
                mark = "" if test is None else "*" if test.significant else " n.s."
                cells.append(f"{self._value_text(row, i)} ({self._delta_text(row, i)}){mark}")
            cells += [self._spread_text(row, g) for g in self.groups]
            body.append([row.metric, *cells])
        return header, body

    def notes(self) -> list[str]:
        """Footnotes after the first line: what the marks mean, which runs are unpaired and why."""
        out = []
        if any(t is not None for r in self.rows for t in r.tests):
            out.append("* significant at 5% (McNemar's exact test for one accuracy, paired bootstrap over images "
                       "for derived numbers); n.s. = no detectable difference at 5%")
        for label, reasons in self.unpaired.items():
            out.append(f"{label} unpaired: {'; '.join(reasons)}; its deltas count as significant only where the two "
                       "95% intervals do not overlap (conservative: a real difference can stay unmarked)")
        for row in self.rows:
            for i, why in enumerate(row.incomparable):
                if why:
                    out.append(f"{row.metric} of {self.labels[i]} is not comparable with {self.labels[0]}'s: {why}")
        if self.groups:
            out.append("mean ± sd over seeds: runs of one recipe that differ only in the training seed "
                       "(sd: sample standard deviation)")
        return out

    def flip_rows(self, top: int = FLIP_ROWS) -> dict[str, list[FlipSet]]:
        """Per run, the flip sets worth a line: clean first, then the conditions with the most flips."""
        out = {}
        for label, sets in self.flips.items():
            clean = [f for f in sets if f.path.startswith("clean.")]
            rest = sorted((f for f in sets if f not in clean), key=lambda f: (-f.count, f.path))
            out[label] = clean + rest[:top]
        return out

    def flip_text(self) -> list[str]:
        lines = []
        for label, sets in self.flip_rows().items():
            lines.append(f"flip set of {label} against {self.labels[0]} (images whose prediction changed; attacks: "
                         f"whose verdict changed), {len(self.flips[label])} conditions, the largest:")
            lines += [f"  {f.path}: {f.count} of {f.images} ({100 * f.rate:.1f}%), lost {f.lost}, gained {f.gained}"
                      for f in sets]
        return lines

    def to_text(self) -> str:
        header, body = self.cells()
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *body]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"(deltas against {self.labels[0]}; pts = percentage points)")
        return "\n".join(lines + self.notes() + self.flip_text()) + "\n"

    def to_markdown(self) -> str:
        header, body = self.cells()
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        # '*' escaped: two marks on one line would otherwise turn the text between them italic
        out += ["| " + " | ".join(_md(c) for c in r) + " |" for r in body]
        notes = "".join(f"\n{_md(n)}\n" for n in self.notes())
        flips = ""
        for label, sets in self.flip_rows().items():
            flips += (f"\n### Flip set: {_md(label)} against {_md(self.labels[0])}\n\nImages whose prediction changed "
                      "(attacks: whose verdict changed); lost = right before, wrong after.\n\n"
                      "| condition | images | flips | rate | lost | gained |\n|---|---|---|---|---|---|\n")
            flips += "".join(f"| {f.path} | {f.images} | {f.count} | {100 * f.rate:.1f}% | {f.lost} | {f.gained} |\n"
                             for f in sets)
        return "\n".join(out) + f"\n\nDeltas against {self.labels[0]}; pts = percentage points.\n" + notes + flips

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        others = self.labels[1:]
        heads = [self.group_header(g) for g in self.groups]
        w.writerow(["metric", "path", "unit", *self.labels, *[f"delta {lbl}" for lbl in others],
                    *[f"ci_low {lbl}" for lbl in self.labels], *[f"ci_high {lbl}" for lbl in self.labels],
                    *[f"{k} {lbl}" for lbl in others for k in ("p", "test", "significant")],
                    *[f"{k} {h}" for h in heads for k in ("mean", "sd", "n")]])
        blank = [""] * (len(others) + 2 * len(self.labels) + 3 * len(others) + 3 * len(heads))
        for name, values in self.info.items():
            w.writerow([name, "", "text", *values, *blank])
        for row in self.rows:
            cis = [row.ci(i) for i in range(len(self.labels))]
            tests = [row.test(i) for i in range(1, len(self.labels))]
            spreads = [row.spread(g.runs) for g in self.groups]
            w.writerow([row.metric, row.path, row.unit, *["" if v is None else v for v in row.values],
                        *["" if (d := row.delta(i)) is None else d for i in range(1, len(self.labels))],
                        *["" if c is None else c[0] for c in cis], *["" if c is None else c[1] for c in cis],
                        *[x for t in tests for x in (("", "", "") if t is None else (
                            "" if t.p_value is None else t.p_value, t.test, t.significant))],
                        *[x for s in spreads for x in (("", "", "") if s is None else s)]])
        return buf.getvalue()

    def to_dict(self) -> dict[str, Any]:
        n = len(self.labels)
        metrics = []
        for r in self.rows:
            metrics.append({
                "metric": r.metric, "path": r.path, "unit": r.unit, "higher_is_better": r.higher_is_better,
                "values": r.values, "ci": [None if (c := r.ci(i)) is None else list(c) for i in range(n)],
                "deltas": [r.delta(i) for i in range(1, n)],
                "tests": [None if (t := r.test(i)) is None else t.to_dict() for i in range(1, n)],
                **({"not_comparable": r.incomparable[1:]} if any(r.incomparable) else {}),
            })
        groups = []
        for g in self.groups:
            spreads = {r.path: s for r in self.rows if (s := r.spread(g.runs)) is not None}
            groups.append({"runs": [self.labels[i] for i in g.runs], "seeds": g.seeds,
                           "metrics": {p: {"mean": m, "sd": sd, "n": k} for p, (m, sd, k) in spreads.items()}})
        flips = {label: [f.to_dict(self.classes) for f in sets] for label, sets in self.flips.items()}
        return {"runs": self.labels, "baseline": self.labels[0], "info": self.info, "metrics": metrics,
                "significance_level": statistics.ALPHA, "unpaired": self.unpaired, "seed_groups": groups,
                "flips": flips}

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


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*")


def _common(values: list[str]) -> str:
    """An info cell for a group of runs: the value they share, else each distinct value once."""
    return ", ".join(dict.fromkeys(values))


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
        "train seed": str(ckpt["seed"]) if "seed" in ckpt else "—",
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


# ---------------------------------------------------------------------------------------------
# Seeds of one recipe


def recipe_key(run: Mapping[str, Any]) -> str | None:
    """What a run's model was trained and evaluated with, except the training seed; None if unknown.

    Two runs are seeds of the same recipe, and their numbers may be averaged, when all of these
    are equal:

    * the model (architecture name), the dataset it was trained on, how many training images,
      its initialisation (scratch or ImageNet) and its input size;
    * the optimisation recipe (epochs, batch size, learning rate, weight decay, schedule, label
      smoothing) and the defences with every setting;
    * how it was evaluated: the dataset, the number of test images, the suites and their options.

    The training seed is left out, and so are the outcomes of training (the selected epoch,
    early stopping, accuracy, time, creation date). A run whose checkpoint block records no
    recipe and seed (a pretrained or foreign model) belongs to no recipe.
    """
    ckpt = run.get("checkpoint")
    if not isinstance(ckpt, Mapping) or "seed" not in ckpt or not isinstance(ckpt.get("recipe"), Mapping):
        return None
    defence = ckpt.get("defence") if isinstance(ckpt.get("defence"), Mapping) else {}
    config = run.get("config") if isinstance(run.get("config"), Mapping) else {}
    key = {"model": run.get("model"), "trained_on": ckpt.get("dataset"), "train_images": ckpt.get("train_images"),
           "init": ckpt.get("init"), "pretrained": ckpt.get("pretrained"), "input_size": ckpt.get("input_size"),
           "recipe": ckpt["recipe"], "defences": defence.get("names"), "defence_settings": defence.get("settings"),
           "evaluated_on": run.get("dataset"), "test_images": run.get("n_examples"), "suites": run.get("suites"),
           "suite_options": config.get("suite_options")}
    return json.dumps(key, sort_keys=True, default=str)


def seed_groups(runs: Sequence[Mapping[str, Any]]) -> list[SeedGroup]:
    """Runs sharing a :func:`recipe_key` with at least two distinct training seeds (one run per seed)."""
    by_key: dict[str, dict[Any, int]] = {}
    for i, run in enumerate(runs):
        key = recipe_key(run)
        if key is not None:
            by_key.setdefault(key, {}).setdefault(json.dumps(run["checkpoint"]["seed"], default=str), i)
    return [SeedGroup(list(seeds.values()), [runs[i]["checkpoint"]["seed"] for i in seeds.values()])
            for seeds in by_key.values() if len(seeds) >= 2]


# ---------------------------------------------------------------------------------------------
# Significance of the deltas


class _Tester:
    """Tests each delta against the first run; remembers why a run could not be paired."""

    def __init__(self, runs: Sequence[Mapping[str, Any]], labels: list[str],
                 records: Sequence[Records | None] | None, reasons: Sequence[str] | None) -> None:
        self.runs, self.labels = runs, labels
        self.records = list(records) if records is not None else [None] * len(runs)
        self.reasons = list(reasons) if reasons is not None else [""] * len(runs)
        if len(self.records) != len(runs) or len(self.reasons) != len(runs):
            raise ValueError(f"records and reasons need one entry per run ({len(runs)})")
        self.resampler = paired.resampler_of(runs[0])  # the first run's own draws: both sides of a delta use them
        self.unpaired: dict[str, list[str]] = {}

    def test(self, row: Row, i: int) -> DeltaTest | None:
        if row.delta(i) is None:
            return None
        found = self._paired(row, i)
        if isinstance(found, statistics.Difference):
            return DeltaTest.from_difference(found)
        a, b = row.ci(0), row.ci(i)
        if a is None or b is None or row.unit not in ("fraction", "ratio"):
            return None  # no interval (latency, FLOPs...): the delta stays untested
        self.unpaired.setdefault(self.labels[i], [])
        if found not in self.unpaired[self.labels[i]]:
            self.unpaired[self.labels[i]].append(found)
        return DeltaTest(UNPAIRED, a[1] < b[0] or b[1] < a[0])

    def _why_missing(self, i: int) -> str:
        return self.reasons[i] or "no per-image records"

    def _paired(self, row: Row, i: int) -> statistics.Difference | str:
        """The paired test of row's delta for run ``i`` (:func:`robustbench_lite.paired.difference`), or why none."""
        first, other = self.records[0], self.records[i]
        if first is None:
            why = f" ({self.reasons[0]})" if self.reasons[0] else ""
            return f"the baseline {self.labels[0]} has no per-image records{why}"
        if other is None:
            return self._why_missing(i)
        value, base = row.values[i], row.values[0]
        assert value is not None and base is not None  # row.delta(i) is defined
        diff, why = paired.difference(row.path, self.runs[i], other, row.path, self.runs[0], first, value, base,
                                      resampler=self.resampler)
        return diff if diff is not None else why


def compare(runs: Sequence[Mapping[str, Any]], labels: Sequence[str], records: Sequence[Records | None] | None = None,
            *, reasons: Sequence[str] | None = None) -> Comparison:
    """The comparison table of ``runs`` (results dicts), deltas against the first, tested for significance.

    Args:
        runs: results dicts.
        labels: one column name per run.
        records: each run's per-image records, or None where there are none; None: none at all
            (every delta is then compared through the intervals).
        reasons: per run, why its records are missing (a footnote of the table); "" where they are not.
    """
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
                        [hs[key].value if key in hs else None for hs in heads],
                        [hs[key].ci if key in hs else None for hs in heads]))
    labels = unique_labels(list(labels))
    tester = _Tester(runs, labels, records, reasons)
    for row in rows:
        row.incomparable = [None, *[incomparable(row.path, runs[i], runs[0]) for i in range(1, len(runs))]]
        row.tests = [None, *[None if row.incomparable[i] else tester.test(row, i) for i in range(1, len(runs))]]
    infos = [_info(r) for r in runs]
    info = {k: [i[k] for i in infos] for k in infos[0]}
    info = {k: v for k, v in info.items() if any(x != "—" for x in v)}
    flips = {}
    if records is not None and records[0] is not None:
        for i in range(1, len(runs)):
            if records[i] is not None:
                # per-class conditions repeat the clean flip set's own per-class counts: left out
                flips[labels[i]] = [f for f in flip_sets(records[0], records[i])  # type: ignore[arg-type]
                                    if "per_class" not in f.path]
    classes = (runs[0].get("clean") or {}).get("classes")
    return Comparison(labels, rows, info, seed_groups(runs), tester.unpaired, flips, classes)
