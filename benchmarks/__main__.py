"""`python -m benchmarks`: see benchmarks.suite."""

import sys

from .suite import main

sys.exit(main())
