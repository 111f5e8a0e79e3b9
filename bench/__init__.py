"""`python -m bench` (`make bench`): every figure of docs/benchmarks.md, measured side by side in one run."""
