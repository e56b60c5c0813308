"""``python -m robustbench_lite`` (and ``torchrun -m robustbench_lite``) runs the CLI."""

import sys

from robustbench_lite.cli import main

sys.exit(main())
