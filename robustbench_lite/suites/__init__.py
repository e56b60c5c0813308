"""Evaluation suites; importing the package registers them in :data:`SUITES`."""

from robustbench_lite.suites import adversarial, clean, corruptions, efficiency, shift  # noqa: F401  (registration)
from robustbench_lite.suites.base import SUITES, EvalContext, Suite, register_suite

__all__ = ["SUITES", "EvalContext", "Suite", "register_suite"]
