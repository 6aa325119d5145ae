"""Random command texts through the running bot: one well-formed reply each, no crash."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lunara.telegram.commands import COMMANDS
from tests.fakes.telegram_api import FakeTelegram
from tests.lunara.telegram.conftest import ADMIN, TRADER, UNPACED, running_bot
from tests.waiting import until


def _answered(fake: FakeTelegram, user: int, before: int) -> Callable[[], bool]:
    """Whether `user` has a reply beyond the `before` messages they had (or the fake
    refused a call: the test fails on that next)."""
    return lambda: len(fake.messages_to(user)) > before or bool(fake.rejected)


arguments = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    min_size=1,
    max_size=60,
).filter(lambda text: text.strip() != "")

command_texts = st.tuples(
    st.sampled_from([*sorted(COMMANDS), "nosuchcommand"]),
    st.lists(arguments, max_size=4),
    st.booleans(),
).map(lambda parts: f"/{parts[0]} " + " ".join(parts[1]) * (40 if parts[2] else 1))


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(texts=st.lists(command_texts, min_size=10, max_size=25))
def test_random_commands_get_one_valid_html_reply_each_and_nothing_unhandled(
    texts: list[str], tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    home: Path = tmp_path_factory.mktemp("fuzz") / "home"
    home.mkdir()

    async def scenario() -> None:
        # Up to 25 questions in a row, long answers in many parts: at Telegram's pace of
        # one message a second per chat that is waiting that proves nothing about replies.
        with FakeTelegram(flood_limits=False) as fake:
            async with running_bot(
                fake, home, send_limits=UNPACED, LUNARA_RATE_LIMIT_PER_MINUTE="1000"
            ):
                for index, text in enumerate(texts):
                    user = ADMIN if index % 2 else TRADER
                    before = len(fake.messages_to(user))
                    fake.push_text(user, text)
                    await until(
                        _answered(fake, user, before),
                        what=f"a reply to {text[:40]!r}",
                    )
                    await asyncio.sleep(0)
                assert not fake.rejected, fake.rejected[:1]

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    unexpected = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert not unexpected, unexpected[0].getMessage()
