"""HTML stress-test report: a Jinja2 template (autoescaped) plus matplotlib figures, one self-contained file.

    from robustbench_lite.report import write_html
    write_html("reports/run.html", [results_dict])            # one run
    write_html("reports/cmp.html", [a, b, c])                  # several: comparison table + Pareto plot

``results_dict`` is a results JSON (``EvaluationResult.to_dict()`` or :func:`results.read_json`);
the example-image grid is drawn when it carries ``examples`` (see :mod:`.examples`).
"""

from robustbench_lite.report.render import render, write_html

__all__ = ["render", "write_html"]
