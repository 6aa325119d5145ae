"""The bot's Telegram side, on python-telegram-bot 22."""

import os

# python-telegram-bot 22 hands out durations such as `RetryAfter.retry_after` as int
# seconds with a deprecation warning, or as `datetime.timedelta` (the type its next
# major version gives) once PTB_TIMEDELTA is set. This package reads both; it opts in
# here, on import and so before any error is read, to the type that stays. An operator
# who sets PTB_TIMEDELTA keeps that choice.
os.environ.setdefault("PTB_TIMEDELTA", "true")
