"""The label audit's HTML page: what was found, how well it matches the injected noise, the worst suspects."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robustbench_lite.report.render import _B64, _environment


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _detection_row(name: str, d: Mapping[str, Any]) -> dict[str, str]:
    return {"name": name, "precision": _pct(d["precision"]), "recall": _pct(d["recall"]), "f1": f"{d['f1']:.3f}",
            "flagged": f"{d['flagged']:,}"}


def context(report: Mapping[str, Any]) -> dict[str, Any]:
    """What the template shows: numbers formatted, only well-formed base64 images."""
    classes = list(report["classes"])
    detection = report.get("detection")
    naive = report.get("detection_predicted_neq_given")
    joint = report["confident_joint"]
    peak = max((v for i, row in enumerate(joint) for j, v in enumerate(row) if i != j), default=0) or 1
    suspects = [{**{k: row[k] for k in ("index", "given_name", "suggested_name")},
                 "score": f"{row['score']:.3f}", "injected": row.get("injected"),
                 "src": "data:image/png;base64," + str(row["png"])}
                for row in report["suspects"] if row.get("png") and all(ch in _B64 for ch in str(row["png"]))]
    return {
        "title": f"Label audit: {report.get('model_file') or report.get('model') or report['data']}",
        "facts": [("images", f"{report['images']:,} of {report['data']}"),
                  ("probabilities", f"{report['method']}" + (f", {report['folds']} folds, on the {report['features']}"
                                                            if report.get("folds") else "")),
                  ("filter", report["filter"]),
                  ("probe accuracy on the given labels", _pct(report["probe_accuracy"])),
                  ("flagged", f"{report['flagged']:,} ({_pct(report['flagged_fraction'])})"),
                  ("estimated noise rate", _pct(report["estimated_noise_rate"]))]
                 + ([("injected noise", f"{detection['injected']:,} labels ({_pct(report['true_noise_rate'])})")]
                    if detection else []),
        "detection": None if not detection else [_detection_row("confident learning", detection),
                                                 _detection_row("prediction != given label", naive)],
        "at_injected": _pct(detection.get("precision_at_injected")) if detection else None,
        "per_class": [{"name": r["class"], "images": f"{r['images']:,}", "flagged": f"{r['flagged']:,}",
                       "rate": _pct(r["flagged"] / r["images"] if r["images"] else None)} for r in report["per_class"]],
        "classes": classes,
        "joint": [{"name": classes[i], "cells": [{"value": v, "diagonal": i == j,
                                                  "shade": 0 if i == j else round(min(1.0, v / peak), 3)}
                                                 for j, v in enumerate(row)]} for i, row in enumerate(joint)],
        "suspects": suspects, "total_suspects": len(report["suspects"]),
        "generated": time.strftime("%Y-%m-%d %H:%M"),
    }


def render_audit(report: Mapping[str, Any]) -> str:
    return _environment().get_template("audit.html").render(**context(report))


def write_audit_html(path: str | Path, report: Mapping[str, Any]) -> Path:
    """Render and write atomically; returns the path."""
    from robustbench_lite.files import atomic_write

    text = render_audit(report)
    return atomic_write(path, lambda f: f.write(text))
