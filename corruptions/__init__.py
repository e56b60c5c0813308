"""Image corruptions (ImageNet-C / CIFAR-10-C catalogue) as batched tensor code.

Importing the package registers every corruption in :data:`CORRUPTIONS`.
"""

from __future__ import annotations

from corruptions.base import BENCHMARK, CORRUPTIONS, EXTRA, FAMILIES, Corruption, family_of, register_corruption
from corruptions.profiles import PROFILES, TABLES, profile_for_size, severity_params

# Each module registers its corruptions on import.
from corruptions import blur, digital, geometric, noise, weather  # noqa: E402,F401  isort: skip

__all__ = [
    "BENCHMARK", "CORRUPTIONS", "EXTRA", "FAMILIES", "PROFILES", "TABLES",
    "Corruption", "family_of", "profile_for_size", "register_corruption", "severity_params",
]
