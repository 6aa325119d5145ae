"""Logging for the bot: text or JSON lines on stderr, with secrets redacted everywhere.

The bot writes LUNARA_HOME/logs/bot.log itself, size-rotated; the watchdog captures
whatever else reaches stdout/stderr (an interpreter crash) into logs/bot-output.log.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from logging.handlers import RotatingFileHandler
from pathlib import Path
from types import TracebackType
from typing import TextIO

from blueprint.redaction import Redactor
from blueprint.units import MIB


class RedactSecrets(logging.Filter):
    """Replace configured secrets and anything shaped like one in every record (the
    rules are blueprint.redaction's, shared with the CLI and the audit log)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._redactor = Redactor(secrets)

    def redact(self, text: str) -> str:
        return self._redactor.redact(text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = self.redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


# Errors that are a remote API's answer (Telegram said 409, timed out, asked to wait), not
# a fault of ours: (module, class) of their base class, matched without importing it.
REMOTE_ERRORS: tuple[tuple[str, str], ...] = (("telegram.error", "TelegramError"),)


class RemoteErrorsInOneLine(logging.Filter):
    """A library's record about a remote API error keeps one line, not a traceback.

    python-telegram-bot logs some errors it handles itself (a failed final getUpdates
    while stopping, say) with the whole stack; the stack is the library's and says
    nothing an operator can act on. The error's type and text stay, at WARNING at most.
    Our own loggers (`lunara.*`) are left alone: a traceback there is a bug to see.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is None or record.name.startswith("lunara") or not _is_remote(error):
            return True
        record.msg = f"{record.getMessage()} ({type(error).__name__}: {error})"
        record.args = None
        record.exc_info = None
        record.exc_text = None
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _is_remote(error: BaseException) -> bool:
    return any((kind.__module__, kind.__name__) in REMOTE_ERRORS for kind in type(error).__mro__)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:
            document["exception"] = record.exc_text
        return json.dumps(document, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# Libraries held at WARNING even at LOG_LEVEL=DEBUG: their debug lines carry what the
# redactor cannot know to be private. The HTTP clients log request URLs (a Telegram URL
# holds the bot token); aiosqlite logs every statement with its parameters (whole
# Telegram updates, users' chats, encrypted keys); google-genai logs requests and
# answers (through its own loggers and httpx2).
QUIET_LIBRARIES = (
    "httpx",
    "httpx2",
    "httpcore",
    "telegram.ext",
    "urllib3",
    "aiohttp.access",
    "aiosqlite",
    "google_genai",
)

LOG_MAX_BYTES = 10 * MIB
LOG_BACKUPS = 5


def configure_logging(
    level: str = "INFO",
    log_format: str = "text",
    secrets: Iterable[str] = (),
    log_file: Path | None = None,
    stream: TextIO | None = None,
) -> RedactSecrets:
    """Route every record through one redaction filter to the rotating log file.

    With `log_file`, records go to that file (size-rotated, LOG_BACKUPS kept) and also to
    `stream` only when it is given or stderr is a terminal; without it, to stderr. An
    uncaught exception is logged (redacted) before the interpreter exits.
    """
    redactor = RedactSecrets(secrets)
    formatter: logging.Formatter
    if log_format == "json":
        formatter = JsonFormatter()
    else:
        formatter = logging.Formatter(TEXT_FORMAT)
        formatter.converter = time.gmtime
    handlers: list[logging.Handler] = []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            RotatingFileHandler(
                log_file, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
            )
        )
    if stream is not None or log_file is None or sys.stderr.isatty():
        handlers.append(logging.StreamHandler(stream if stream is not None else sys.stderr))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
        existing.close()
    one_line = RemoteErrorsInOneLine()
    for handler in handlers:
        handler.addFilter(one_line)
        handler.addFilter(redactor)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level.upper())
    for quiet in QUIET_LIBRARIES:
        logging.getLogger(quiet).setLevel(max(logging.WARNING, root.level))

    def log_uncaught(
        kind: type[BaseException], value: BaseException, trace: TracebackType | None
    ) -> None:
        logging.getLogger("lunara").critical("uncaught exception", exc_info=(kind, value, trace))

    sys.excepthook = log_uncaught
    return redactor
