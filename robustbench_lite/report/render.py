"""HTML report from results JSON dicts: one self-contained file (inline CSS, SVG figures, PNG examples).

The report reads only the results JSON (what :meth:`EvaluationResult.to_dict` writes, plus the
optional ``examples`` and ``gates`` keys), so ``robust-eval report RESULTS.json`` rebuilds it
without the model. Every section is optional: a suite that did not run is left out, and a section
whose data has an unexpected shape is replaced by a one-line note instead of failing the report.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from robustbench_lite import gates as gates_mod
from robustbench_lite.report import figures

SUITE_ORDER = ("clean", "adversarial", "corruptions", "shift", "efficiency")
SUITE_TITLES = {"clean": "Clean", "adversarial": "Adversarial", "corruptions": "Corruptions", "shift": "Shift",
                "efficiency": "Efficiency"}
#: Shift splits drawn in the reliability diagram besides the clean split (the worst ones).
RELIABILITY_SPLITS = 4


# ---------------------------------------------------------------------------------------------
# Formatting


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pct(value: Any, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f}%" if _finite(value) else "n/a"


def num(value: Any, digits: int = 4) -> str:
    if not _finite(value):
        return "n/a"
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.{digits}g}"


def si(value: Any) -> str:
    if not _finite(value):
        return "n/a"
    for div, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= div:
            return f"{value / div:.3g}{suffix}"
    return f"{value:.3g}"


def fmt_headline(h: gates_mod.Headline) -> str:
    return h.text


def _signed(value: Any) -> str:
    return f"{value:+.4g}" if _finite(value) else "n/a"


# ---------------------------------------------------------------------------------------------
# Sections: each returns the section's template context or None when its data is absent


def _stats(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"label": k, "value": v} for k, v in pairs]


def clean_section(block: Mapping[str, Any]) -> dict[str, Any]:
    classes = [str(c) for c in block.get("classes", [])]
    per_class = block.get("per_class_accuracy") or []
    out: dict[str, Any] = {
        "stats": _stats(("accuracy", pct(block.get("accuracy"))), ("macro-F1", num(block.get("f1_macro"), 3)),
                        ("ECE", num(block.get("ece"), 3)), ("NLL", num(block.get("nll"), 3)),
                        ("images", num(block.get("n_examples")))),
        "per_class": [{"name": classes[i] if i < len(classes) else str(i), "accuracy": pct(a), "value": a}
                      for i, a in enumerate(per_class)],
        "confusion": None, "reliability": None,
    }
    if block.get("confusion_matrix"):
        out["confusion"] = figures.confusion_matrix(block["confusion_matrix"], classes or
                                                    [str(i) for i in range(len(block["confusion_matrix"]))])
    if block.get("reliability"):
        out["reliability"] = figures.reliability([("clean", block["reliability"])])
    return out


def adversarial_section(block: Mapping[str, Any]) -> dict[str, Any]:
    entries = [r for r in block.get("results") or [] if isinstance(r, Mapping)]
    series: dict[str, tuple[list[float], list[float]]] = {}
    for r in sorted(entries, key=lambda r: (r.get("attack"), r.get("norm"), r.get("eps"))):
        eps, acc = series.setdefault(f"{r.get('attack')}.{r.get('norm')}", ([], []))
        eps.append(float(r["eps"]))
        acc.append(r.get("robust_accuracy"))
    worst: dict[str, list[tuple[float, float]]] = {}
    for key, value in (block.get("worst_case") or {}).items():
        norm, _, rest = str(key).partition("[")
        eps = gates_mod.parse_number(rest.rstrip("]"))
        if eps is not None:
            worst.setdefault(norm, []).append((eps, value))
    for norm, pts in worst.items():
        pts.sort()
        series[f"worst case.{norm}"] = ([p[0] for p in pts], [p[1] for p in pts])
    curves = block.get("curve") or {}
    settings = block.get("settings") or {}
    return {
        "stats": _stats(("clean accuracy", pct(block.get("clean_accuracy"))),
                        ("attacks", ", ".join(map(str, settings.get("attacks", []))) or
                         ", ".join(sorted({str(r.get("attack")) for r in entries}))),
                        ("norms", ", ".join(map(str, settings.get("norms", []))) or
                         ", ".join(sorted({str(r.get("norm")) for r in entries}))),
                        ("steps", num(settings.get("steps"))), ("restarts", num(settings.get("restarts"))),
                        ("images", num(block.get("n_examples")))),
        "rows": [{"attack": r.get("attack"), "norm": r.get("norm"), "eps": num(r.get("eps"), 4),
                  "robust_accuracy": pct(r.get("robust_accuracy")), "asr": pct(r.get("attack_success_rate")),
                  "perturbation": num(r.get("mean_perturbation"), 3), "steps": num(r.get("steps")),
                  "gate_path": f"adversarial.{r.get('key')}.robust_accuracy"} for r in entries],
        "worst": [{"key": k, "value": pct(v)} for k, v in (block.get("worst_case") or {}).items()],
        "auc": [{"name": k, "auc": pct(c.get("auc")), "median": num((c.get("min_eps") or {}).get("median"), 3)}
                for k, c in curves.items() if isinstance(c, Mapping)],
        "warnings": [str(w) for w in block.get("warnings") or []],
        "figure": figures.robust_curves(series, block.get("clean_accuracy")) if series else None,
    }


def corruptions_section(block: Mapping[str, Any]) -> dict[str, Any]:
    acc = block.get("accuracy") or {}
    names = [c for c in block.get("corruptions") or list(acc) if c in acc]
    severities = block.get("severities") or sorted({s for c in acc.values() for s in c}, key=int)
    normalised = bool(block.get("normalised"))
    ce = block.get("ce") or {}
    return {
        "stats": _stats(("mean accuracy", pct(block.get("mean_accuracy"))),
                        ("clean accuracy", pct(block.get("clean_accuracy"))),
                        ("mCE" if normalised else "mean error", pct(block.get("mce"))),
                        ("relative mCE" if normalised else "mean degradation", pct(block.get("relative_mce"))),
                        ("profile", str(block.get("profile", "n/a"))), ("backend", str(block.get("backend", "n/a"))),
                        ("corruptions x severities", f"{len(names)} x {len(severities)}")),
        "normalised": normalised,
        "reference": block.get("mce_reference"),
        "heatmap": figures.corruption_heatmap(acc, names, severities) if names and severities else None,
        "bars": figures.corruption_bars(block.get("accuracy_by_family") or {}, block.get("accuracy_by_severity") or {},
                                        block.get("clean_accuracy")) if block.get("accuracy_by_family") else None,
        "rows": [{"name": c, "mean": pct(sum(v for v in acc[c].values() if v is not None) / max(len(acc[c]), 1)),
                  "ce": pct(ce.get(c)), "relative_ce": pct((block.get("relative_ce") or {}).get(c))}
                 for c in names],
        "unavailable": [{"name": k, "reason": v} for k, v in (block.get("unavailable") or {}).items()],
    }


def _pooled_reliability(levels: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]] | None:
    rels = [lv.get("reliability") for lv in levels if isinstance(lv, Mapping) and lv.get("reliability")]
    if not rels:
        return None
    n_bins = len(rels[0].get("count", []))
    out: dict[str, list[Any]] = {"confidence": [], "accuracy": [], "count": []}
    for b in range(n_bins):
        total = conf = acc = 0.0
        for rel in rels:
            k = rel["count"][b] if b < len(rel.get("count", [])) else 0
            if k and rel["confidence"][b] is not None and rel["accuracy"][b] is not None:
                total += k
                conf += k * rel["confidence"][b]
                acc += k * rel["accuracy"][b]
        out["count"].append(int(total))
        out["confidence"].append(conf / total if total else None)
        out["accuracy"].append(acc / total if total else None)
    return out


def shift_section(block: Mapping[str, Any], clean_reliability: Mapping[str, Any] | None) -> dict[str, Any]:
    splits = {k: v for k, v in (block.get("splits") or {}).items() if isinstance(v, Mapping)}
    rows = []
    for name, s in splits.items():
        rows.append({"name": name, "kind": s.get("kind", ""), "accuracy": pct(s.get("accuracy")),
                     "reference": f"{s.get('reference', 'clean')} {pct(s.get('reference_accuracy'))}",
                     "drop": pct(s.get("drop")), "ece": num(s.get("ece"), 3),
                     "worst_level": f"{s.get('worst_level', '')} {pct(s.get('worst_level_accuracy'))}",
                     "losing": ", ".join(f"{c.get('class')} ({pct(c.get('drop'))})"
                                         for c in s.get("classes_losing_most") or []),
                     "in_summary": bool(s.get("in_summary", True)) and bool(s.get("shifted", True)),
                     "notes": "; ".join(map(str, s.get("notes") or []))})
    curves: list[tuple[str, Mapping[str, Any]]] = []
    if clean_reliability:
        curves.append(("clean", clean_reliability))
    ranked = sorted(splits.items(), key=lambda kv: kv[1].get("accuracy") if _finite(kv[1].get("accuracy")) else 9)
    for name, s in ranked[:RELIABILITY_SPLITS]:
        pooled = _pooled_reliability(s.get("levels") or [])
        if pooled:
            curves.append((name, pooled))
    worst = block.get("worst_split")
    return {
        "stats": _stats(("mean accuracy", pct(block.get("mean_accuracy"))),
                        ("worst accuracy", f"{pct(block.get('worst_accuracy'))}" + (f" ({worst})" if worst else "")),
                        ("accuracy ratio", num(block.get("accuracy_ratio"), 3)),
                        ("clean accuracy", pct(block.get("clean_accuracy"))),
                        ("clean ECE", num(block.get("clean_ece"), 3)), ("splits", str(len(splits)))),
        "rows": rows,
        "bars": figures.shift_bars([(n, s.get("accuracy"), s.get("reference_accuracy")) for n, s in splits.items()])
        if splits else None,
        "reliability": figures.reliability(curves) if len(curves) > (1 if clean_reliability else 0) else None,
        "skipped": [{"name": k, "reason": v} for k, v in (block.get("skipped") or {}).items()],
    }


def efficiency_section(block: Mapping[str, Any]) -> dict[str, Any]:
    shape = block.get("input_shape")
    rows = [
        ("parameters", f"{si(block.get('params'))} ({num(block.get('params'))})"),
        ("trainable parameters", si(block.get("trainable_params"))),
        ("FLOPs per image", si(block.get("flops"))),
        ("MACs per image", si(block.get("macs"))),
        ("weights", f"{num(block.get('size_mb'), 3)} MB"),
        ("input shape", " x ".join(map(str, shape)) if isinstance(shape, list) else "n/a"),
        ("latency, batch 1", f"{num(block.get('latency_ms'), 3)} ms (p90 {num(block.get('latency_ms_p90'), 3)} ms)"),
        ("throughput",
         f"{num(block.get('throughput'), 4)} images/s at batch {num(block.get('throughput_batch_size'))}"),
        ("peak memory", f"{num(block.get('peak_memory_mb'), 3)} MB ({block.get('memory_method', 'n/a')})"),
        ("device, threads", f"{block.get('device', 'n/a')}, {block.get('threads', 'n/a')}"),
    ]
    return {"rows": [{"label": k, "value": v} for k, v in rows]}


def examples_section(block: Mapping[str, Any]) -> dict[str, Any] | None:
    images = [i for i in block.get("images") or [] if isinstance(i, Mapping)]
    rows = []
    for row in block.get("rows") or []:
        if not isinstance(row, Mapping):
            continue
        cells = []
        for cell in row.get("cells") or []:
            png = str(cell.get("png", ""))
            if not png or any(ch not in _B64 for ch in png):
                continue  # only well-formed base64 reaches a data: URI
            cells.append({"src": "data:image/png;base64," + png, "pred": str(cell.get("pred_name", cell.get("pred"))),
                          "confidence": pct(cell.get("confidence"), 0), "correct": bool(cell.get("correct"))})
        wrong = sum(not c["correct"] for c in cells)
        rows.append({"title": str(row.get("title", row.get("name", ""))), "detail": str(row.get("detail", "")),
                     "illustrative": bool(row.get("illustrative")), "cells": cells, "wrong": wrong})
    if not rows:
        return None
    return {"images": [{"index": i.get("index"), "label": str(i.get("label_name", i.get("label")))} for i in images],
            "rows": rows}


_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


# ---------------------------------------------------------------------------------------------
# Runs


def _section(kind: str, title: str, anchor: str, build: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
    try:
        body = build()
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError) as exc:
        return {"kind": "error", "title": title, "id": anchor, "suite": kind,
                "error": f"this section could not be drawn from the results ({type(exc).__name__}: {exc})"}
    if body is None:
        return None
    return {"kind": kind, "title": title, "id": anchor, "suite": kind, **body}


def _quote(parts: Sequence[str]) -> str:
    import shlex

    return " ".join(shlex.quote(str(p)) for p in parts)


def reproduce_command(config: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """The recorded command line when the JSON has one (CLI runs), else one rebuilt from the config."""
    command = data.get("command")
    if isinstance(command, list) and command and all(isinstance(c, str) for c in command):
        return _quote(command)
    parts = ["robust-eval", "--model", str(data.get("model")), "--dataset", str(data.get("dataset")),
             "--suite", ",".join(config.get("suites") or data.get("suites") or [])]
    ckpt = config.get("checkpoint")
    if ckpt:
        parts += ["--checkpoint", str(ckpt)]
    if config.get("pretrained"):
        parts.append("--pretrained")
    if config.get("limit"):
        parts += ["--limit", str(config["limit"])]
    if config.get("batch_size") not in (None, 256):
        parts += ["--batch-size", str(config["batch_size"])]
    parts += ["--seed", str(data.get("seed", config.get("seed", 0)))]
    if config.get("device") not in (None, "auto"):
        parts += ["--device", str(config["device"])]
    return _quote(parts)


def _kv(mapping: Mapping[str, Any] | None, skip: Sequence[str] = ()) -> list[dict[str, str]]:
    out = []
    for key, value in (mapping or {}).items():
        if key in skip:
            continue
        if isinstance(value, float):
            text = f"{value:.4g}"
        elif isinstance(value, (dict, list)):
            text = json.dumps(value, sort_keys=True)
        else:
            text = "—" if value is None else str(value)
        out.append({"key": str(key), "value": text})
    return out


def run_context(data: Mapping[str, Any], index: int, multi: bool) -> dict[str, Any]:
    """Template context of one run."""
    prefix = f"m{index}-" if multi else ""
    suites = [s for s in data.get("suites") or [] if isinstance(s, str)]
    present = [s for s in SUITE_ORDER if isinstance(data.get(s), Mapping)]
    present += [s for s in suites if s not in present and isinstance(data.get(s), Mapping)]
    gate_block = data.get("gates") if isinstance(data.get("gates"), Mapping) else None
    outcomes = [g for g in (gate_block or {}).get("results", []) if isinstance(g, Mapping)]
    heads = gates_mod.headline(data)

    scorecard = []
    for suite in SUITE_ORDER:
        suite_gates = [g for g in outcomes if str(g.get("path", "")).split(".", 1)[0] == suite]
        failed = sum(not g.get("passed") for g in suite_gates)
        status = "not run" if suite not in present else ("fail" if failed else "pass" if suite_gates else "no gates")
        scorecard.append({
            "suite": suite, "title": SUITE_TITLES[suite], "ran": suite in present, "status": status,
            "anchor": prefix + suite,
            "metrics": [{"label": h.label, "value": fmt_headline(h), "path": h.path}
                        for h in heads if h.suite == suite],
            "gates": [{"expr": g.get("expr"), "passed": bool(g.get("passed"))} for g in suite_gates],
        })
    gate_rows = [{"expr": str(g.get("expr")), "value": num(g.get("value")), "threshold": num(g.get("threshold")),
                  "margin": _signed(g.get("margin")), "passed": bool(g.get("passed")),
                  "baseline": num(g.get("baseline_value")) if g.get("baseline_value") is not None else "",
                  "reason": str(g.get("reason") or "")} for g in outcomes]

    clean = data.get("clean") if isinstance(data.get("clean"), Mapping) else None
    builders: dict[str, Callable[[], dict[str, Any] | None]] = {
        "clean": lambda: clean_section(data["clean"]),
        "adversarial": lambda: adversarial_section(data["adversarial"]),
        "corruptions": lambda: corruptions_section(data["corruptions"]),
        "shift": lambda: shift_section(data["shift"], (clean or {}).get("reliability")),
        "efficiency": lambda: efficiency_section(data["efficiency"]),
    }
    sections = []
    for suite in present:
        if suite in builders:
            section = _section(suite, SUITE_TITLES[suite], prefix + suite, builders[suite])
            if section:
                sections.append(section)
    examples = None
    if isinstance(data.get("examples"), Mapping):
        examples = _section("examples", "Examples", prefix + "examples", lambda: examples_section(data["examples"]))

    config = data.get("config") if isinstance(data.get("config"), Mapping) else {}
    timings = data.get("timings") if isinstance(data.get("timings"), Mapping) else {}
    return {
        "index": index, "prefix": prefix, "model": str(data.get("model")), "dataset": str(data.get("dataset")),
        "title": f"{data.get('model')} on {data.get('dataset')}", "n_examples": num(data.get("n_examples")),
        "seed": str(data.get("seed")), "suites": suites, "scorecard": scorecard,
        "gates": {"total": len(outcomes), "failed": sum(not g.get("passed") for g in outcomes),
                  "baseline": (gate_block or {}).get("baseline"), "rows": gate_rows} if gate_block else None,
        "sections": sections, "examples": examples,
        "repro": {
            "command": reproduce_command(config, data),
            "config": _kv(config, skip=("suite_options", "show_progress", "json")),
            "suite_options": json.dumps(config.get("suite_options") or {}, indent=1, sort_keys=True),
            "environment": _kv(data.get("environment")),
            "checkpoint": _kv(data.get("checkpoint")),
            "timings": [{"key": k, "value": f"{v:.2f} s" if _finite(v) else "n/a"} for k, v in timings.items()],
            "schema_version": str(data.get("schema_version")),
        },
    }


def _labels(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    base = [str(r.get("model")) for r in runs]
    if len(set(base)) < len(base):
        base = [f"{r.get('model')} / {r.get('dataset')}" for r in runs]
    if len(set(base)) < len(base):
        base = [f"{b} #{i + 1}" for i, b in enumerate(base)]
    return base


def comparison_context(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Comparison table (one row per metric, one column per run, the best value marked) and Pareto plot."""
    labels = _labels(runs)
    heads = [{(h.suite, h.label): h for h in gates_mod.headline(r)} for r in runs]
    keys: list[tuple[str, str]] = []
    for hs in heads:
        keys += [k for k in hs if k not in keys]
    rows = [{"metric": "dataset", "cells": [{"text": str(r.get("dataset")), "best": False} for r in runs]},
            {"metric": "test images", "cells": [{"text": num(r.get("n_examples")), "best": False} for r in runs]}]
    for key in keys:
        cells = [hs.get(key) for hs in heads]
        values = [h.value for h in cells if h is not None and _finite(h.value)]
        best = None
        if len(values) > 1 and len(set(values)) > 1:
            higher = next(h for h in cells if h is not None).higher_is_better
            best = max(values) if higher else min(values)
        rows.append({"metric": f"{key[0]} {key[1]}", "path": next(h for h in cells if h is not None).path,
                     "cells": [{"text": "—" if h is None else h.text, "best": h is not None and h.value == best}
                               for h in cells]})
    gate_cells = []
    for r in runs:
        g = r.get("gates") if isinstance(r.get("gates"), Mapping) else None
        gate_cells.append({"text": "—" if not g else ("pass" if g.get("passed") else f"{g.get('failed')} failed"),
                           "best": False})
    rows.append({"metric": "gates", "cells": gate_cells})
    suite = next((s for s in gates_mod.ROBUSTNESS_ORDER
                  if all(gates_mod.robustness_score(r, s)[1] is not None for r in runs)), None)
    pareto, metric = None, None
    if suite:
        scores = [gates_mod.robustness_score(r, suite) for r in runs]
        metric = scores[0][0]
        points = []
        for label, r, (_, y) in zip(labels, runs, scores, strict=True):
            eff = r.get("efficiency") if isinstance(r.get("efficiency"), Mapping) else {}
            points.append((label, eff.get("latency_ms"), eff.get("size_mb"), y))
        if sum(p[1] is not None for p in points) >= 2:
            pareto = figures.pareto(points, metric)
    return {"runs": labels, "rows": rows, "pareto": pareto, "metric": metric}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(
            lambda name: resources.files("robustbench_lite.report").joinpath(name).read_text(encoding="utf-8")),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    return env


def render(runs: Sequence[Mapping[str, Any]], title: str | None = None) -> str:
    """The report's HTML for one or more results JSON dicts."""
    if not runs:
        raise ValueError("render needs at least one results dict")
    multi = len(runs) > 1
    contexts = [run_context(r, i, multi) for i, r in enumerate(runs)]
    if title is None:
        title = (f"Robustness report: {contexts[0]['title']}" if not multi else
                 f"Robustness comparison: {len(runs)} runs")
    return _environment().get_template("template.html").render(
        title=title, runs=contexts, multi=multi, comparison=comparison_context(runs) if multi else None,
        generated=time.strftime("%Y-%m-%d %H:%M"),
        versions=(runs[0].get("environment") or {}).get("robustbench_lite", ""),
    )


def write_html(path: str | Path, runs: Sequence[Mapping[str, Any]], title: str | None = None) -> Path:
    """Render and write atomically; returns the path."""
    from robustbench_lite.files import atomic_write

    text = render(runs, title)
    return atomic_write(path, lambda f: f.write(text))
