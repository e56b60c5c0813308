"""One number of two runs on the same images, compared pair by pair (gates against a baseline, compare).

Two runs scored on the same test images are not independent: the hard images are hard for both.
Their difference is measured far more precisely pair by pair than from the two intervals apart:

* one recorded accuracy (a condition in both runs' records): McNemar's exact test on the images
  one run gets right and the other wrong, with Newcombe's paired interval
  (:func:`robustbench_lite.statistics.mcnemar_difference`);
* a number a suite derives from several accuracies (a mean over corruptions, mCE): the paired
  bootstrap, both runs' replicates drawn by one :class:`~robustbench_lite.statistics.Resampler`,
  so resample r of each run uses the same images (:func:`robustbench_lite.statistics.paired_difference`).

When the images differ, or either run kept no records, there is no pairing: :func:`difference`
returns None and says why, and callers fall back to each run's own interval.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from robustbench_lite import statistics
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.records import Condition, Records, paired
from robustbench_lite.suites import SUITES


def resampler_of(results: Mapping[str, Any]) -> statistics.Resampler:
    """The resampler a run's own bootstrap intervals were drawn with (its ``statistics`` block), else the default."""
    stats = results.get("statistics") if isinstance(results.get("statistics"), Mapping) else {}
    seed = stats.get("seed", results.get("seed", 0))
    resamples = stats.get("resamples", statistics.RESAMPLES)
    ok = isinstance(seed, int) and isinstance(resamples, int) and resamples > 0
    return statistics.Resampler(seed=seed, resamples=resamples) if ok else statistics.Resampler()


#: Conditions scored on the images of classes chosen by the run (its worst class, its class groups):
#: two runs may choose differently, and only numbers of that family are computed from them.
CLASS_CHOSEN = ("worst_class", "group_")


def conditions_behind(path: str, records: Records) -> list[Condition]:
    """The recorded conditions a number is computed from: itself, or (a derived number) its suite's, without
    the class-chosen conditions unless the number is of their family (a mean over corruptions does not
    depend on which class was the worst)."""
    if path in records:
        return [records[path]]
    suite, _, key = path.partition(".")
    conds = records.suite(suite.split("[", 1)[0])
    if key.startswith(CLASS_CHOSEN):
        return conds
    return [c for c in conds if not c.path.partition(".")[2].startswith(CLASS_CHOSEN)]


def replicates(path: str, results: Mapping[str, Any], records: Records,
               resampler: statistics.Resampler) -> np.ndarray | None:
    """Bootstrap replicates of the number at gate path ``path``: a recorded accuracy or a suite's derived number.

    None when the records hold neither (the number is not computed from recorded accuracies).
    """
    if path in records:
        return records.replicates(resampler, [path])[path]
    suite, _, key = path.partition(".")
    block = results.get(suite)
    conds = records.suite(suite)
    if suite not in SUITES or not isinstance(block, Mapping) or not conds or not key:
        return None
    try:
        derived = SUITES.entry(suite).derived(block, records.replicates(resampler, [c.path for c in conds]))
    except (KeyError, TypeError, ValueError, RobustEvalError):  # a block of another shape (an older run)
        return None
    reps = derived.get(key)
    return None if reps is None else np.asarray(reps, dtype=np.float64)


def same_images(path: str, records: Records, base_path: str, base_records: Records) -> str:
    """Why the two numbers are not on the same images ("" when they are, pair by pair)."""
    mine, theirs = conditions_behind(path, records), conditions_behind(base_path, base_records)
    if not mine:
        return f"the run's records hold no condition behind {path}"
    if not theirs:
        return f"the baseline's records hold no condition behind {base_path}"
    if path == base_path:  # the same number: every condition behind it scored on the same images, same weights
        if {c.path for c in mine} != {c.path for c in theirs}:
            return f"the two runs computed {path} from different conditions"
        bad = next((c.path for c in mine if not paired(records, base_records, c.path)), None)
        return "" if bad is None else f"the two runs scored {bad} on different images"
    sides = [*((c, records, base_records) for c in mine), *((c, base_records, records) for c in theirs)]
    for cond, recs, other in sides:
        here, there = recs.image_sets.get(cond.images), other.image_sets.get(cond.images)
        if here is None or there is None or not here.same_as(there):
            return f"the two runs' {cond.images!r} images differ"
    return ""


def difference(path: str, results: Mapping[str, Any], records: Records | None,
               base_path: str, baseline: Mapping[str, Any], base_records: Records | None,
               value: float, base_value: float,
               resampler: statistics.Resampler | None = None) -> tuple[statistics.Difference | None, str]:
    """The paired difference (run minus baseline) of one number, or None and the reason it is not paired.

    Args:
        path, base_path: gate paths of the number in the run and in the baseline (usually equal).
        results, baseline: the two results JSON dicts (blocks for suites' derived numbers).
        records, base_records: their per-image records (None: not available).
        value, base_value: the two point values, as in the JSONs.
        resampler: draws for the paired bootstrap (default: the run's own, :func:`resampler_of`).

    Returns:
        McNemar's test (one recorded accuracy, counted on the same images in both) or the paired
        bootstrap (anything else computed from records), and "" -- or (None, why not).
    """
    if records is None or base_records is None:
        return None, "the run's per-image records are not available" if records is None else \
            "the baseline has no per-image records"
    why = same_images(path, records, base_path, base_records)
    if why:
        return None, why
    if path in records and base_path in base_records:
        mine, theirs = records[path], base_records[base_path]
        a, b = theirs.subset, mine.subset
        if a is not None and b is not None and np.array_equal(a, b):
            return statistics.mcnemar_difference(theirs.correct[a], mine.correct[b]), ""
    resampler = resampler or resampler_of(results)
    reps = replicates(path, results, records, resampler)
    base_reps = replicates(base_path, baseline, base_records, resampler)
    if reps is None or base_reps is None:
        missing = path if reps is None else base_path
        return None, f"{missing} is not computed from recorded accuracies"
    return statistics.paired_difference(base_reps, reps, value - base_value), ""


def describe(diff: statistics.Difference) -> str:
    """``difference -0.8 pts [-1.5, -0.1], p=0.03 McNemar``: accuracy-like numbers in percentage points."""
    lo, hi = diff.ci
    ci = f" [{100 * lo:+.1f}, {100 * hi:+.1f}]" if np.isfinite(lo) and np.isfinite(hi) else ""
    test = "McNemar" if diff.test == "mcnemar" else diff.test
    return f"difference {100 * diff.delta:+.1f} pts{ci}, {p_text(diff.p_value)} {test}"


def p_text(p: float) -> str:
    """``p=0.03``, ``p<0.001``; ``p=n/a`` when undefined."""
    if not np.isfinite(p):
        return "p=n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def margin_interval(diff: statistics.Difference, path: str, results: Mapping[str, Any], records: Records,
                    base_path: str, baseline: Mapping[str, Any], base_records: Records, value: float,
                    base_value: float, threshold_of: Callable[[Any], Any],
                    linear: bool = True) -> tuple[float, float] | None:
    """The interval of ``value - threshold_of(baseline)`` for a paired baseline gate.

    With a threshold that shifts the baseline (``baseline``, ``baseline - 0.01``: ``linear``), it is
    the paired difference's interval, shifted; otherwise (``baseline * 1.1``) the paired bootstrap of
    ``value - threshold_of(baseline)`` itself. None when it cannot be computed.
    """
    if linear:
        lo, hi = diff.ci
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return None
        shift = base_value - float(threshold_of(base_value))  # value - threshold = difference + shift
        return (lo + shift, hi + shift)
    resampler = resampler_of(results)
    reps = replicates(path, results, records, resampler)
    base_reps = replicates(base_path, baseline, base_records, resampler)
    if reps is None or base_reps is None:
        return None
    return statistics.percentile_interval(reps - threshold_of(base_reps))
