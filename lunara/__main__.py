"""`python -m lunara`: the supervised bot's entry point."""

from __future__ import annotations

import sys

from lunara.app import main

if __name__ == "__main__":
    sys.exit(main())
