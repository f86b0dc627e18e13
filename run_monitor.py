#!/usr/bin/env python3
"""Command-line entry point of the order monitor. ``python run_monitor.py --help`` for commands."""

from monitor.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
