"""Command-line entry point: ``python run.py COMMAND`` (also installed as ``nifty-engine``)."""

from __future__ import annotations

import sys

from engine.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
