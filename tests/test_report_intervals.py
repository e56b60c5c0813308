"""Intervals shown to people: the console table, the HTML report (cards, stat lines, tables, the note)
and the figures' error bars and bands; results without intervals look as they always did."""

from __future__ import annotations

import base64
import copy
import json
import re

import pytest
from test_report import synthetic

from robustbench_lite import cli, figures
from robustbench_lite.outputs import print_table
from robustbench_lite.report import render
from robustbench_lite.results import EvaluationResult
from robustbench_lite.statistics import interval_text
from robustbench_lite.suites.clean import CleanResult

STATISTICS = {"level": 0.95, "accuracy": "wilson score interval",
              "derived": "paired percentile bootstrap over images (every condition resampled together)",
              "resamples": 2000, "seed": 0}


def with_intervals(data: dict) -> dict:
    """``synthetic()`` with a ``ci`` in every suite block (the paths the suites write) and ``statistics``."""
    data = copy.deepcopy(data)
    clean = data["clean"]
    clean["ci"] = {"accuracy": [clean["accuracy"] - 0.05, clean["accuracy"] + 0.04],
                   "per_class_accuracy[3]": [0.111, 0.222]}
    data["corruptions"]["ci"] = {
        "mean_accuracy": [0.25, 0.35], "clean_accuracy": [0.75, 0.85], "mce": [0.45, 0.55],
        "accuracy.fog.3": [0.123, 0.234], "ce.fog": [0.456, 0.567],
        **{f"accuracy_by_severity.{s}": [0.6 - 0.08 * s - 0.03, 0.6 - 0.08 * s + 0.03] for s in range(1, 6)},
        **{f"accuracy_by_family.{f}": [v - 0.05, v + 0.05]
           for f, v in data["corruptions"]["accuracy_by_family"].items()}}
    data["shift"]["ci"] = {"splits.covariate/rotation.accuracy": [0.432, 0.567], "mean_accuracy": [0.432, 0.567],
                           "worst_accuracy": [0.432, 0.567]}
    adv = data["adversarial"]
    adv["ci"] = {**{f"robust_accuracy.{r['key']}": [r["robust_accuracy"] - 0.1, r["robust_accuracy"] + 0.1]
                    for r in adv["results"]},
                 "worst_case.Linf[0.1]": [0.171, 0.333], "curve.pgd.Linf.auc": [0.444, 0.654]}
    data["statistics"] = dict(STATISTICS)
    return data


def svgs(html: str) -> list[str]:
    return [base64.b64decode(b).decode() for b in re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", html)]


def interval_artists(svg: str) -> int:
    return len(re.findall(rf'id="{figures.INTERVAL_ID}', svg))


def scorecard(html: str) -> str:
    return html[html.index('data-section="scorecard"'):html.index('data-section="model"')
                if 'data-section="model"' in html else html.index('data-section="clean"')]


def test_report_shows_every_interval_and_says_what_they_are():
    data = with_intervals(synthetic())
    html = render([data])
    assert "could not be drawn" not in html
    cards = scorecard(html)
    acc = data["clean"]["accuracy"]
    # headline cards: the value, then its interval under it
    assert f'{100 * acc:.1f}%<span class="ci">[{100 * (acc - 0.05):.1f}, {100 * (acc + 0.04):.1f}]</span>' in cards
    assert '<span class="ci">[25.0, 35.0]</span>' in cards  # corruptions mean accuracy
    assert '<span class="ci">[43.2, 56.7]</span>' in cards  # shift mean and worst accuracy
    assert '<span class="ci">[17.1, 33.3]</span>' in cards  # adversarial worst case, found by its path in the ci
    note = re.search(r"data-ci-note>([^<]*)<", cards)
    assert note and "95% confidence interval" in note[1] and "wilson score interval" in note[1]
    assert "paired percentile bootstrap" in note[1] and "2,000 resamples, seed 0" in note[1]
    # stat lines and tables
    assert "[11.1, 22.2]" in html  # clean per-class accuracy of class 3
    assert "[45.6, 56.7]" in html  # corruptions CE of fog in its table row
    assert "fog by severity: s3 " + interval_text(data["corruptions"]["accuracy"]["fog"]["3"], (0.123, 0.234)) in html
    assert html.count("[43.2, 56.7]") >= 5  # shift: 2 cards, 2 stats, the split's row
    for r in data["adversarial"]["results"]:
        a = r["robust_accuracy"]
        assert f'{100 * a:.1f}% <span class="ci">[{100 * (a - 0.1):.1f}, {100 * (a + 0.1):.1f}]</span>' in html
    assert "[44.4, 65.4]" in html  # the sweep's area under the curve
    # figures: the same seven, now with error bars (corruption families and severities, shift splits) and bands
    pictures = svgs(html)
    assert len(pictures) == 7
    assert sum(interval_artists(p) > 0 for p in pictures) == 3
    assert "error bars: confidence intervals" in html and "Shaded: confidence intervals." in html


@pytest.mark.slow
def test_report_without_intervals_is_drawn_as_before():
    html = render([synthetic()])
    assert 'class="ci"' not in html and "data-ci-note" not in html and "confidence interval" not in html
    values = re.findall(r'<span class="v">([^<]*)</span>', html)
    assert values and not any("[" in v for v in values)  # no empty or stray brackets in cards and stat lines
    assert not any(interval_artists(p) for p in svgs(html))
    # a ci that is present but malformed draws no bracket either
    data = synthetic()
    data["clean"]["ci"] = {"accuracy": "oops", "per_class_accuracy[0]": [None, 1]}
    broken = render([data])
    assert "could not be drawn" not in broken and not re.search(r'class="ci">\s*\[', broken)


@pytest.mark.slow
def test_comparison_table_carries_intervals():
    a, b = with_intervals(synthetic("a")), synthetic("b", level=0.5)
    html = render([a, b])
    table = html[html.index('data-section="comparison"'):html.index('id="m0-run"')]
    assert '<span class="ci">[25.0, 35.0]</span>' in table and "data-ci-note" in table
    # run a's clean accuracy, corruption mean accuracy and mCE, adversarial worst case, shift mean and worst
    assert table.count('class="ci"') == 6


def test_figures_draw_intervals_only_when_given():
    fam, sev = {"noise": 0.5, "blur": 0.4}, {"1": 0.6, "3": 0.4}
    plain = figures.corruption_bars(fam, sev, 0.8)
    assert figures.corruption_bars(fam, sev, 0.8, None, None, None) == plain  # same figure as before intervals
    drawn = figures.corruption_bars(fam, sev, 0.8, {"noise": (0.45, 0.55), "blur": (0.3, 0.5)},
                                    {"1": (0.55, 0.65), "3": (0.3, 0.5)}, (0.75, 0.85))
    svg = base64.b64decode(drawn.split(",", 1)[1]).decode()
    assert 'id="ci-family-0"' in svg and 'id="ci-severity-0"' in svg
    assert interval_artists(base64.b64decode(plain.split(",", 1)[1]).decode()) == 0

    splits = [("covariate/rotation", 0.5, 0.8), ("label/prior", 0.7, 0.8)]
    assert figures.shift_bars(splits, None) == figures.shift_bars(splits)
    svg = base64.b64decode(figures.shift_bars(splits, {"label/prior": (0.6, 0.8)}).split(",", 1)[1]).decode()
    assert 'id="ci-split-0"' in svg

    series = {"pgd.Linf": ([0.01, 0.03], [0.6, 0.3]), "fgsm.L2": ([0.5], [0.7])}
    svg = base64.b64decode(figures.robust_curves(series, 0.9, {"pgd.Linf": [(0.5, 0.7), (0.2, 0.4)]},
                                                 (0.85, 0.95)).split(",", 1)[1]).decode()
    assert 'id="ci-band-Linf-0"' in svg and interval_artists(svg) == 1  # fgsm.L2 has no interval: no band
    assert interval_artists(base64.b64decode(figures.robust_curves(series, 0.9).split(",", 1)[1]).decode()) == 0


def clean_result(intervals: dict | None) -> EvaluationResult:
    clean = CleanResult(accuracy=0.912, f1_macro=0.9, ece=0.03, nll=0.3, n_examples=500, classes=["a", "b"],
                        per_class_accuracy=[0.9, 0.92], confusion_matrix=[[225, 25], [19, 231]])
    result = EvaluationResult(model="m", dataset="digits", n_examples=500, seed=0, config={}, environment={},
                              suites={"clean": clean}, timings={"clean": 1.25})
    if intervals:
        result.intervals = {"clean": intervals}
        result.statistics = dict(STATISTICS)
    return result


def test_console_table_shows_headline_intervals():
    lines: list[str] = []
    print_table(clean_result({"accuracy": [0.906, 0.917]}), lines.append)
    assert lines[1] == "  clean        accuracy 0.912  macro-F1 0.9  ECE 0.03  NLL 0.3   [1.2 s]"
    assert lines[2].split() == ["accuracy", "91.2%", "[90.6,", "91.7]"]
    assert lines[-1] == "  [...] = 95% interval (Wilson; means: paired bootstrap over images)"
    before: list[str] = []
    print_table(clean_result(None), before.append)
    assert before == lines[:2]  # no intervals: the table as it always was


def test_digits_run_shows_its_intervals(digits_checkpoint, tmp_path, capsys, one_thread):
    argv = ["--checkpoint", str(digits_checkpoint), "--suite", "clean,corruptions", "--corruptions", "fog",
            "--severities", "1,3", "--limit", "80", "--json", str(tmp_path / "r.json"),
            "--html", str(tmp_path / "r.html"), "--no-progress", "--no-history"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    data = json.loads((tmp_path / "r.json").read_text())
    acc, ci = data["clean"]["accuracy"], data["clean"]["ci"]["accuracy"]
    assert f"accuracy {interval_text(acc, tuple(ci))}" in printed and "[...] = 95% interval" in printed
    mean = data["corruptions"]["mean_accuracy"]
    assert f"mean accuracy {interval_text(mean, tuple(data['corruptions']['ci']['mean_accuracy']))}" in printed
    html = (tmp_path / "r.html").read_text()
    assert f'<span class="ci">[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]</span>' in scorecard(html)
    assert "data-ci-note" in html and "2,000 resamples" in html
    bars = [s for s in svgs(html) if 'id="ci-family-0"' in s]
    assert len(bars) == 1 and 'id="ci-severity-0"' in bars[0]


def test_gate_table_shows_the_interval_and_how_it_decided():
    data = with_intervals(synthetic())
    data["gates"] = {"passed": False, "total": 1, "failed": 1, "baseline": None, "results": [
        {"expr": "clean.accuracy >= 0.8", "path": "clean.accuracy", "op": ">=", "value": 0.81, "threshold": 0.8,
         "passed": False, "reason": "", "interval": [0.7712, 0.8455], "decided_by": "ci_low",
         "note": "strict: the interval's low end decides", "margin": 0.01}]}
    html = render([data])
    table = html[html.index('gates"><thead>') if 'gates"><thead>' in html else html.index("<th>gate</th>"):]
    assert "[0.771, 0.846]" in table and "strict: the interval&#39;s low end decides" in table
