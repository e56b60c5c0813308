"""HTML report from results JSON dicts: one self-contained file (inline CSS, SVG figures, PNG examples).

The report reads only the results JSON (what :meth:`EvaluationResult.to_dict` writes, plus the
optional ``examples`` and ``gates`` keys), so ``robust-eval report RESULTS.json`` rebuilds it
without the model. Every section is optional: a suite that did not run is left out, and a section
whose data has an unexpected shape is replaced by a one-line note instead of failing the report.

Confidence intervals come from each suite block's ``ci`` (``{path in the block: [low, high]}``)
and are shown beside the numbers as ``[low, high]`` (the ``interval`` filter), with a note saying
what they are (from the results' ``statistics`` block). Results written before intervals existed
have no ``ci``: their report is drawn as it always was, without brackets or note.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from robustbench_lite import figures
from robustbench_lite import gates as gates_mod
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.formatting import finite, num, pct, signed
from robustbench_lite.statistics import LEVEL, as_interval, interval_text
from robustbench_lite.suites import SUITES, ordered_suites
from robustbench_lite.suites.base import Headline, block_interval

#: Where each suite's section template lives (``partials/clean.html``); it gets the section as ``s``.
PARTIAL = "partials/{}.html"


# ---------------------------------------------------------------------------------------------
# Sections: each suite draws its own (Suite.report_section); the examples grid is drawn here


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
            cams = {k: "data:image/png;base64," + str(cell[k]) if cell.get(k) and all(ch in _B64 for ch in str(cell[k]))
                    else None for k in ("cam_pred", "cam_true")}
            cells.append({"src": "data:image/png;base64," + png, "pred": str(cell.get("pred_name", cell.get("pred"))),
                          "confidence": pct(cell.get("confidence"), 0), "correct": bool(cell.get("correct")), **cams})
        wrong = sum(not c["correct"] for c in cells)
        rows.append({"title": str(row.get("title", row.get("name", ""))), "detail": str(row.get("detail", "")),
                     "illustrative": bool(row.get("illustrative")), "cells": cells, "wrong": wrong})
    if not rows:
        return None
    cam = block.get("cam") if isinstance(block.get("cam"), Mapping) else {}
    return {"images": [{"index": i.get("index"), "label": str(i.get("label_name", i.get("label")))} for i in images],
            "rows": rows, "cam_layer": cam.get("layer"), "cam_note": cam.get("note")}


_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


# ---------------------------------------------------------------------------------------------
# Confidence intervals


def interval_cell(ci: Any, unit: str = "fraction") -> str:
    """An interval as a report cell shows it beside its value: ``[90.6, 91.7]`` (fractions in
    percent), ``[0.906, 0.917]`` (ratios); "" without one. The report's ``interval`` filter."""
    pair = as_interval(ci)
    if pair is None:
        return ""
    return interval_text(0.5, pair, unit).partition(" ")[2]  # the bracket only; the value is shown already


def headline_interval(head: Headline, data: Mapping[str, Any]) -> tuple[float, float] | None:
    """A headline's interval: the one it carries, else its path's entry in its suite block's ``ci``."""
    if head.unit not in ("fraction", "ratio"):
        return None  # latency, size, counts: measurements, not proportions
    if head.ci is not None:
        return head.ci
    block = data.get(head.suite)
    return block_interval(block, head.path.removeprefix(f"{head.suite}.")) if isinstance(block, Mapping) else None


def has_intervals(data: Mapping[str, Any]) -> bool:
    """Whether any suite block of a results dict carries intervals."""
    return any(isinstance(data.get(s.name), Mapping) and isinstance(data[s.name].get("ci"), Mapping)
               and data[s.name]["ci"] for s in ordered_suites())


def interval_note(data: Mapping[str, Any]) -> str | None:
    """What the brackets are, from the results' ``statistics`` block; None when nothing has an interval."""
    if not has_intervals(data):
        return None
    info = data.get("statistics") if isinstance(data.get("statistics"), Mapping) else {}
    level = info.get("level") if finite(info.get("level")) else LEVEL
    sentences = [f"[low, high] beside a number is its {100 * level:g}% confidence interval"]
    resampling = ", ".join(part for part in (
        f"{num(info['resamples'])} resamples" if finite(info.get("resamples")) else "",
        f"seed {info['seed']}" if finite(info.get("seed")) else "") if part)
    methods = info.get("methods")
    if isinstance(methods, Mapping) and methods:
        sentences += [f"{str(k).capitalize()}: {v}" for k, v in methods.items()]
        if resampling:
            sentences.append(f"Bootstrap: {resampling}")
    else:
        if info.get("accuracy"):
            sentences.append(f"Accuracies: {info['accuracy']}")
        if info.get("derived"):
            sentences.append(f"Means, mCE, ratios and worst cases: {info['derived']}"
                             + (f", {resampling}" if resampling else ""))
    return ". ".join(sentences) + "."


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
    return {"kind": kind, "title": title, "id": anchor, "suite": kind, "partial": PARTIAL.format(kind), **body}


def _quote(parts: Sequence[str]) -> str:
    import shlex

    return " ".join(shlex.quote(str(p)) for p in parts)


def reproduce_command(config: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """The recorded command line when the JSON has one (CLI runs), else one rebuilt from the config."""
    command = data.get("command")
    if isinstance(command, list) and command and all(isinstance(c, str) for c in command):
        return _quote(command)
    model = config.get("model", data.get("model"))  # None: the model file names its architecture
    parts = ["robust-eval", *(["--model", str(model)] if model else []), "--dataset", str(data.get("dataset")),
             "--suite", ",".join(config.get("suites") or data.get("suites") or [])]
    ckpt = config.get("checkpoint")
    if ckpt:
        parts += ["--checkpoint", str(ckpt)]
    if config.get("surrogate"):
        parts += ["--surrogate", str(config["surrogate"])]
    if isinstance(config.get("contract"), Mapping) and config["contract"]:
        from robustbench_lite.sources.contract import InputContract

        try:
            parts += InputContract.from_mapping(config["contract"]).to_args()
        except RobustEvalError:
            pass
    if config.get("pretrained"):
        parts.append("--pretrained")
    if config.get("limit"):
        parts += ["--limit", str(config["limit"])]
    if config.get("batch_size") not in (None, 256):
        parts += ["--batch-size", str(config["batch_size"])]
    parts += ["--seed", str(data.get("seed", config.get("seed", 0)))]
    if config.get("device") not in (None, "auto"):
        parts += ["--device", str(config["device"])]
    for name, options in (config.get("suite_options") or {}).items():
        if name in SUITES and isinstance(options, Mapping):
            try:
                parts += SUITES.entry(name).Options.from_mapping(options).to_args()
            except RobustEvalError:  # options this version no longer accepts: the command stays without them
                continue
    return _quote(parts)


def source_section(source: Any) -> dict[str, Any] | None:
    """The report's "Model" card: what was evaluated, in what runtime, and what the adapter does."""
    if not isinstance(source, Mapping) or not source:
        return None
    size = source.get("file_bytes")
    where = f"{source.get('path')}" + (f" ({size / 1e6:.2f} MB)" if isinstance(size, (int, float)) else "")
    summary = f"{source.get('format')} model, run in {source.get('runtime')}" + (
        f", from {where}" if source.get("path") else "")
    if source.get("differentiable") is False:
        summary += "; no input gradients (attacks need a surrogate)"
    contract = source.get("contract") if isinstance(source.get("contract"), Mapping) else {}
    rows = {"input shape (C, H, W)": source.get("input_shape"), "fixed batch": source.get("fixed_batch"),
            **{f"contract: {k.replace('_', ' ')}": v for k, v in contract.items() if v is not None}}
    return {"summary": summary, "adaptations": [str(a) for a in source.get("adaptations") or []],
            "notes": [str(n) for n in source.get("notes") or []],
            "rows": _kv({k: v for k, v in rows.items() if v is not None})}


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
    known = ordered_suites()
    present = [s.name for s in known if isinstance(data.get(s.name), Mapping)]
    present += [s for s in suites if s not in present and isinstance(data.get(s), Mapping)]
    gate_block = data.get("gates") if isinstance(data.get("gates"), Mapping) else None
    outcomes = [g for g in (gate_block or {}).get("results", []) if isinstance(g, Mapping)]
    heads = gates_mod.headline(data)

    scorecard = []
    for meta in known:
        suite = meta.name
        suite_gates = [g for g in outcomes if str(g.get("path", "")).split(".", 1)[0] == suite]
        failed = sum(not g.get("passed") for g in suite_gates)
        status = "not run" if suite not in present else ("fail" if failed else "pass" if suite_gates else "no gates")
        scorecard.append({
            "suite": suite, "title": meta.title, "ran": suite in present, "status": status,
            "anchor": prefix + suite,
            "metrics": [{"label": h.label, "value": h.text, "path": h.path,
                         "ci": interval_cell(headline_interval(h, data), h.unit)} for h in heads if h.suite == suite],
            "gates": [{"expr": g.get("expr"), "passed": bool(g.get("passed"))} for g in suite_gates],
        })
    gate_rows = [{"expr": str(g.get("expr")), "value": num(g.get("value")), "threshold": num(g.get("threshold")),
                  "margin": signed(g.get("margin")), "passed": bool(g.get("passed")),
                  "baseline": num(g.get("baseline_value")) if g.get("baseline_value") is not None else "",
                  "ci": interval_cell(g.get("interval"), "ratio") if g.get("interval") else "",
                  "reason": "; ".join(str(t) for t in (g.get("reason"), g.get("note")) if t)} for g in outcomes]

    sections = []
    for suite in present:
        if suite in SUITES:
            meta = SUITES.entry(suite)
            section = _section(suite, meta.title, prefix + suite,
                               lambda m=meta: m.report_section(data[m.name], data))
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
        "seed": str(data.get("seed")), "suites": suites, "scorecard": scorecard, "ci_note": interval_note(data),
        "gates": {"total": len(outcomes), "failed": sum(not g.get("passed") for g in outcomes),
                  "baseline": (gate_block or {}).get("baseline"), "rows": gate_rows} if gate_block else None,
        "sections": sections, "examples": examples, "source": source_section(data.get("source")),
        "repro": {
            "command": reproduce_command(config, data),
            "config": _kv(config, skip=("suite_options", "show_progress", "json", "contract")),
            "suite_options": json.dumps(config.get("suite_options") or {}, indent=1, sort_keys=True),
            "environment": _kv(data.get("environment")),
            "checkpoint": _kv(data.get("checkpoint")),
            "timings": [{"key": k, "value": f"{v:.2f} s" if finite(v) else "n/a"} for k, v in timings.items()],
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
    rows = [{"metric": "dataset", "cells": [{"text": str(r.get("dataset")), "best": False, "ci": ""} for r in runs]},
            {"metric": "test images", "cells": [{"text": num(r.get("n_examples")), "best": False, "ci": ""}
                                                for r in runs]}]
    for key in keys:
        cells = [hs.get(key) for hs in heads]
        values = [h.value for h in cells if h is not None and finite(h.value)]
        best = None
        if len(values) > 1 and len(set(values)) > 1:
            higher = next(h for h in cells if h is not None).higher_is_better
            best = max(values) if higher else min(values)
        rows.append({"metric": f"{key[0]} {key[1]}", "path": next(h for h in cells if h is not None).path,
                     "cells": [{"text": "—" if h is None else h.text, "best": h is not None and h.value == best,
                                "ci": "" if h is None else interval_cell(headline_interval(h, r), h.unit)}
                               for h, r in zip(cells, runs, strict=True)]})
    gate_cells = []
    for r in runs:
        g = r.get("gates") if isinstance(r.get("gates"), Mapping) else None
        gate_cells.append({"text": "—" if not g else ("pass" if g.get("passed") else f"{g.get('failed')} failed"),
                           "best": False, "ci": ""})
    rows.append({"metric": "gates", "cells": gate_cells})
    suite = next((s for s in gates_mod.robustness_order()
                  if all(gates_mod.robustness_score(r, s)[1] is not None for r in runs)), None)
    pareto, metric = None, None
    if suite:
        scores = [gates_mod.robustness_score(r, suite) for r in runs]
        metric = scores[0][0]
        points = []
        for label, r, (_, y) in zip(labels, runs, scores, strict=True):
            eff = r.get("efficiency") if isinstance(r.get("efficiency"), Mapping) else {}
            points.append((label, eff.get("latency_ms"), _size_mb(r), y))
        if sum(p[1] is not None for p in points) >= 2 or sum(p[2] is not None for p in points) >= 2:
            pareto = figures.pareto(points, metric)
    note = next((n for n in map(interval_note, runs) if n), None)
    from robustbench_lite.analysis.stress_curves import METRICS, stress_curves

    stress = [{"title": c["title"], "src": figures.stress_curves(c["title"], c["xlabel"], c["log_x"], c["lines"],
                                                                 [name for _, name in METRICS]),
               "remedies": list(c["lines"])} for c in stress_curves(runs)]
    return {"runs": labels, "rows": rows, "pareto": pareto, "metric": metric, "ci_note": note, "stress": stress}


def _size_mb(run: Mapping[str, Any]) -> float | None:
    """What a run's model costs on disk: the file it was loaded from, else its serialised weights (efficiency)."""
    eff = run.get("efficiency") if isinstance(run.get("efficiency"), Mapping) else {}
    source = run.get("source") if isinstance(run.get("source"), Mapping) else {}
    for value in (eff.get("file_mb"), source.get("file_bytes") and source["file_bytes"] / 1e6, eff.get("size_mb")):
        if isinstance(value, (int, float)) and finite(value):
            return float(value)
    return None


def flip_context(flips: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The comparison's flip sets as the template shows them (rates in percent, well-formed images only)."""
    out = []
    for f in flips:
        rows = [{"path": str(r["path"]), "images": num(r["images"]), "flips": num(r["flips"]),
                 "rate": pct(r["rate"], 1), "lost": num(r["lost"]), "gained": num(r["gained"])}
                for r in f.get("rows") or []]
        examples = [{"src": "data:image/png;base64," + str(e["png"]), "index": e.get("index"),
                     "label": str(e.get("label")), "before": str(e.get("before")), "after": str(e.get("after")),
                     "lost": bool(e.get("lost"))}
                    for e in f.get("examples") or [] if e.get("png") and all(ch in _B64 for ch in str(e["png"]))]
        out.append({"label": str(f["label"]), "against": str(f.get("against", "the first run")), "rows": rows,
                    "examples": examples})
    return out


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: resources.files("robustbench_lite.report").joinpath(
            *name.split("/")).read_text(encoding="utf-8")),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["interval"] = interval_cell
    return env


def render(runs: Sequence[Mapping[str, Any]], title: str | None = None,
           flips: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The report's HTML for one or more results JSON dicts.

    ``flips``: flip sets of each run against the first for the comparison section, each
    ``{"label", "against", "rows": [{path, images, flips, rate, lost, gained}], "examples": [{png,
    index, label, before, after, lost}]}`` (``robust-eval compare`` builds them from per-image records).
    """
    if not runs:
        raise ValueError("render needs at least one results dict")
    multi = len(runs) > 1
    contexts = [run_context(r, i, multi) for i, r in enumerate(runs)]
    if title is None:
        title = (f"Robustness report: {contexts[0]['title']}" if not multi else
                 f"Robustness comparison: {len(runs)} runs")
    return _environment().get_template("template.html").render(
        title=title, runs=contexts, multi=multi,
        comparison={**comparison_context(runs), "flips": flip_context(flips or [])} if multi else None,
        generated=time.strftime("%Y-%m-%d %H:%M"),
        versions=(runs[0].get("environment") or {}).get("robustbench_lite", ""),
    )


def write_html(path: str | Path, runs: Sequence[Mapping[str, Any]], title: str | None = None,
               flips: Sequence[Mapping[str, Any]] | None = None) -> Path:
    """Render and write atomically; returns the path."""
    from robustbench_lite.files import atomic_write

    text = render(runs, title, flips)
    return atomic_write(path, lambda f: f.write(text))
