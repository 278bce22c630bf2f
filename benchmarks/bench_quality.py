"""Run `tim bench quality` from a checkout (prints the JSON report); all flags are passed through.

Usage: python benchmarks/bench_quality.py [flags of `tim bench quality --help`]
See docs/benchmarks.md for the exact commands behind the published numbers.
"""

from __future__ import annotations

import sys

from tim.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "quality", *sys.argv[1:]]))
