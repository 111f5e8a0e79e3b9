"""`python -m bench [--quick] [--only ROWS] [--output FILE] [--data-dir DIR]` (what `make bench` runs):
every figure of docs/benchmarks.md, measured side by side in one run. Not part of the product."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--data-dir", help="where the dataset and the embedded servers live (default: ./.bench)",
                        default=".bench")
    parser.add_argument("--quick", action="store_true", help="a reduced dataset and shorter runs")
    parser.add_argument("--output", help="also write the table to this file")
    parser.add_argument("--only", help="measure only these rows (comma-separated: sql, creates, summaries, "
                                       "latency, callbacks, import, memory, feedback-writes, call-ingest, "
                                       "http-feedback, http-annotations, http-creates, http-status, console)")
    args = parser.parse_args(argv)
    # Before anything reads the settings, which happens once per process.
    os.environ["SUMMARIES_DATA_DIR"] = str(Path(args.data_dir).absolute())
    from bench.run import main as run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
