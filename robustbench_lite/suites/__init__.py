"""Evaluation suites; importing the package registers them in :data:`SUITES`."""

from robustbench_lite.suites import adversarial, clean, corruptions, efficiency, shift  # noqa: F401  (registration)
from robustbench_lite.suites.base import SUITES, EvalContext, Suite, options_from_args, register_suite, typed_options

__all__ = ["SUITES", "EvalContext", "Suite", "options_from_args", "register_suite", "typed_options"]
