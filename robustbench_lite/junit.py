"""Gate outcomes as JUnit XML (one testcase per gate), the format CI systems show as test results."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from robustbench_lite.gates import GateOutcome, detail_text


def write_junit(path: str | Path, outcomes: Sequence[GateOutcome], suite_name: str = "robust-eval gates",
                properties: Mapping[str, Any] | None = None) -> Path:
    """JUnit XML (one testcase per gate), written atomically."""
    from robustbench_lite.files import atomic_write

    failures = sum(not o.passed for o in outcomes)
    root = ET.Element("testsuites", name="robust-eval", tests=str(len(outcomes)), failures=str(failures),
                      errors="0")
    suite = ET.SubElement(root, "testsuite", name=suite_name, tests=str(len(outcomes)), failures=str(failures),
                          errors="0", skipped="0", time="0",
                          timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime()))
    if properties:
        props = ET.SubElement(suite, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", name=str(key), value=str(value))
    for o in outcomes:
        case = ET.SubElement(suite, "testcase", classname=f"robust_eval.gates.{o.path.split('.', 1)[0]}",
                             name=o.expr, time="0")
        detail = detail_text(o)
        if o.passed:
            ET.SubElement(case, "system-out").text = detail
        else:
            ET.SubElement(case, "failure", message=detail, type="GateFailure").text = detail
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode", xml_declaration=False)
    return atomic_write(path, lambda f: f.write('<?xml version="1.0" encoding="utf-8"?>\n' + text + "\n"))
