"""The bot's entry point keeps optional parts of its libraries that it never uses out of its
memory (httpx's command-line client, Pillow), while those libraries still work: read from a
real interpreter that imports what the running bot imports."""

from __future__ import annotations

import json
import subprocess
import sys

SKIPPED = ("click", "rich", "pygments", "PIL")
# What the bot imports when Telegram and Gemini are configured, and a use of each library.
BOT_IMPORTS = (
    "import httpx, telegram.ext\n"
    "from google.genai import types\n"
    "assert types.Part(text='x').text == 'x'\n"
    "assert httpx.Request('GET', 'http://127.0.0.1/').method == 'GET'\n"
)
REPORT = (
    "import json, sys\n"
    f"print(json.dumps([n for n in {SKIPPED!r} if sys.modules.get(n) is not None]))\n"
)


def loaded_after(prelude: str) -> list[str]:
    """Which of `SKIPPED` a fresh interpreter has loaded after `prelude` and the imports."""
    result = subprocess.run(
        [sys.executable, "-c", prelude + BOT_IMPORTS + REPORT],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    loaded: list[str] = json.loads(result.stdout)
    return loaded


def test_without_the_entry_point_the_libraries_load_the_unused_modules() -> None:
    """The check below can fail: imported plainly, the libraries load them."""
    assert set(loaded_after("")) == set(SKIPPED)


def test_the_entry_point_keeps_the_unused_modules_out() -> None:
    prelude = "import lunara.__main__ as entry\nentry.skip_unused_optional_modules()\n"
    assert loaded_after(prelude) == []
