"""`python -m lunara`: the supervised bot's entry point."""

from __future__ import annotations

import sys

UNUSED_OPTIONAL_MODULES = ("httpx._main", "PIL")
"""Modules that libraries of the bot import only when they are installed, for features the
bot never uses; the CLI's dependencies install them. httpx loads its command-line client
(click, rich and pygments, about 4.5 MiB) when it is first imported; google-genai loads
Pillow (about 2 MiB) for image prompts, and the bot sends text."""


def skip_unused_optional_modules() -> None:
    """Mark the modules above as missing before anything imports them: an import then
    raises ImportError, which those libraries catch and go on without the feature."""
    for name in UNUSED_OPTIONAL_MODULES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "not installed"


if __name__ == "__main__":
    skip_unused_optional_modules()
    from lunara.app import main

    sys.exit(main())
