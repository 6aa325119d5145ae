"""The one place that formats messages for Telegram (HTML parse mode).

Every dynamic value goes through `escape`; templates use only tags Telegram accepts
(<b>, <i>, <code>, <pre>). Long replies are split under Telegram's 4096-character limit
at line boundaries; a single over-long line is cut between characters, never inside
an entity such as `&amp;` or a tag, and tags open at a cut are closed and reopened.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal

MESSAGE_LIMIT = 4096


def escape(value: object) -> str:
    return html.escape(str(value), quote=False)


def bold(value: object) -> str:
    return f"<b>{escape(value)}</b>"


def code(value: object) -> str:
    return f"<code>{escape(value)}</code>"


def money(value: Decimal | float | None, places: int = 2) -> str:
    if value is None:
        return "-"
    return escape(f"{Decimal(str(value)):,.{places}f}")


def number(value: float | None, places: int = 2) -> str:
    return "-" if value is None else escape(f"{value:,.{places}f}")


def percent(ratio: float | None) -> str:
    return "-" if ratio is None else escape(f"{ratio * 100:+.2f}%")


def lines(*parts: str | None) -> str:
    return "\n".join(part for part in parts if part is not None)


def table(rows: Iterable[Sequence[object]]) -> str:
    """Aligned plain columns inside <pre> (values escaped)."""
    materialised = [[str(cell) for cell in row] for row in rows]
    if not materialised:
        return ""
    widths = [max(len(row[i]) for row in materialised) for i in range(len(materialised[0]))]
    body = "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        for row in materialised
    )
    return f"<pre>{escape(body)}</pre>"


TAG = re.compile(r"<(/?)([a-z]+)>")
TAG_ROOM = 64  # room kept in each chunk for re-closing and re-opening tags


def _safe_cut(text: str, limit: int) -> int:
    """The largest cut position <= limit that is not inside an entity or a tag."""
    cut = limit
    ampersand = text.rfind("&", max(0, cut - 10), cut)
    if ampersand != -1 and ";" not in text[ampersand:cut]:
        cut = ampersand
    bracket = text.rfind("<", max(0, cut - 10), cut)
    if bracket != -1 and ">" not in text[bracket:cut]:
        cut = bracket
    return max(cut, 1)


def _split_lines(text: str, limit: int) -> list[str]:
    chunks: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:  # one line longer than a whole message
            if current:
                chunks.append(current)
                current = ""
            cut = _safe_cut(line, limit)
            chunks.append(line[:cut])
            line = line[cut:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            chunks.append(current)
            current = line
        else:
            current = candidate
    if current:
        chunks.append(current)
    return [chunk for chunk in chunks if chunk.strip()]


def _open_tags(text: str, already_open: list[str]) -> list[str]:
    stack = list(already_open)
    for closing, name in TAG.findall(text):
        if not closing:
            stack.append(name)
        elif stack and stack[-1] == name:
            stack.pop()
    return stack


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Chunks of at most `limit` characters, cut at line ends where possible.

    A tag left open at a cut (a long <pre> table, say) is closed at the end of its chunk
    and opened again at the start of the next, so every chunk is well-formed on its own.
    """
    if len(text) <= limit:
        return [text]
    chunks: list[str] = []
    still_open: list[str] = []
    for piece in _split_lines(text, limit - TAG_ROOM):
        reopened = "".join(f"<{name}>" for name in still_open)
        still_open = _open_tags(piece, still_open)
        closed = "".join(f"</{name}>" for name in reversed(still_open))
        chunks.append(f"{reopened}{piece}{closed}")
    return chunks or [text[:limit]]
