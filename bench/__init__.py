"""Benchmarks: the sidecar against the direct component call, measured in the same run.

Run `uv run python -m bench --help` from the workspace root; see bench/README.md.
"""
