"""Evaluation suites; importing the package registers them in :data:`SUITES`.

Every module of this package but :mod:`.base` is imported here and registers its suite, so a new
suite is one module (and its report partial, ``report/partials/<name>.html``) with no list to edit.
"""

import importlib
import pkgutil

from robustbench_lite.suites.base import (
    ALL_SUITES,
    SUITES,
    EvalContext,
    Headline,
    HeadlineMetric,
    Suite,
    expand_suites,
    full_suites,
    incomparable,
    options_from_args,
    ordered_suites,
    register_suite,
    typed_options,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ALL_SUITES", "SUITES", "EvalContext", "Headline", "HeadlineMetric", "Suite", "expand_suites",
           "full_suites", "incomparable", "options_from_args", "ordered_suites", "register_suite", "typed_options"]
