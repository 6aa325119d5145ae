"""Every /command the bot tells users about is one it answers."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import lunara
from lunara.telegram.commands import COMMANDS

PACKAGE = Path(lunara.__file__).parent
# "/word" at the start of a string or after a space, quote or bracket: "send /setkeys".
SLASH_WORD = re.compile(r"(?:^|(?<=[\s(\"'`>]))/([a-z][a-z0-9_]*)\b")
# URL paths that look like commands: Binance's REST root and Telegram's URL prefixes.
URL_PATHS = {"api", "bot", "file"}


def _docstrings(tree: ast.AST) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def slash_words_in_strings() -> dict[str, list[str]]:
    """Each /word in the package's string literals (docstrings aside) → where it is."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
                continue
            if id(node) in docstrings:
                continue
            for match in SLASH_WORD.finditer(node.value):
                where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                found.setdefault(match.group(1), []).append(where)
    return found


def test_every_command_named_in_a_message_is_registered() -> None:
    named = slash_words_in_strings()
    assert "setkeys" in named  # the scan sees f-strings and plain messages alike
    unknown = {word: places for word, places in named.items()
               if word not in COMMANDS and word not in URL_PATHS}  # fmt: skip
    assert unknown == {}, f"messages name commands the bot does not have: {unknown}"


def test_the_scan_finds_a_command_that_does_not_exist() -> None:
    assert [m.group(1) for m in SLASH_WORD.finditer("add your key first (/keys)")] == ["keys"]
    assert "keys" not in COMMANDS
