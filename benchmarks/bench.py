"""Run the l1backends benchmark: ``python benchmarks/bench.py --help``."""

import sys

from l1backends.bench import main

if __name__ == "__main__":
    sys.exit(main())
