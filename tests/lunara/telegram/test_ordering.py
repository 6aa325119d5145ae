"""One user's updates in the order fetched, others' side by side (`PerUserOrder`)."""

from __future__ import annotations

import asyncio
import datetime

from telegram import CallbackQuery, Chat, Message, Update, User

from lunara.telegram.ordering import PerUserOrder, ordered_by


def message_from(user_id: int, update_id: int) -> Update:
    user = User(user_id, f"user{user_id}", is_bot=False)
    chat = Chat(user_id, Chat.PRIVATE)
    now = datetime.datetime.now(datetime.UTC)
    return Update(update_id, message=Message(update_id, now, chat, from_user=user, text="/x"))


async def test_a_users_updates_wait_for_each_other_and_another_users_do_not() -> None:
    """Two slots: user 1's slow update holds one, the three waiting behind it hold none,
    so user 2's passes them all."""
    processor = PerUserOrder(concurrent=2)
    release = asyncio.Event()
    done: list[str] = []

    async def slow() -> None:
        await release.wait()
        done.append("first of 1")

    async def fast(name: str) -> None:
        done.append(name)

    tasks = [
        asyncio.create_task(processor.process_update(message_from(1, 1), slow())),
        *(
            asyncio.create_task(processor.process_update(message_from(1, n), fast(f"{n} of 1")))
            for n in (2, 3, 4)
        ),
        asyncio.create_task(processor.process_update(message_from(2, 5), fast("first of 2"))),
    ]
    await asyncio.wait_for(tasks[-1], 5)  # user 2 passes while user 1's first is held
    assert done == ["first of 2"]
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert done == ["first of 2", "first of 1", "2 of 1", "3 of 1", "4 of 1"]
    assert processor._locks == {}  # users with nothing in line are forgotten


def test_button_presses_and_checkouts_wait_for_nobody() -> None:
    user = User(1, "user1", is_bot=False)
    press = Update(5, callback_query=CallbackQuery("q", user, chat_instance="1"))
    assert ordered_by(press) is None
    assert ordered_by(message_from(1, 6)) == 1
    assert ordered_by(object()) is None
