"""The fake Bot API speaks Telegram well enough for the real python-telegram-bot."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from telegram import LabeledPrice, Update
from telegram.error import BadRequest, Conflict, RetryAfter, TelegramError
from telegram.ext import Application, ApplicationBuilder, CommandHandler, ContextTypes

from tests.fakes.telegram_api import FakeTelegram, check_html
from tests.waiting import until

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")

TOKEN = "123456:TEST-token"
OTHER_TOKEN = "654321:other-token"


@pytest.fixture
def tg() -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake


def build(fake: FakeTelegram, token: str = TOKEN) -> Application[Any, Any, Any, Any, Any, Any]:
    return ApplicationBuilder().token(token).base_url(fake.base_url + "/bot").build()


async def polling(app: Application[Any, Any, Any, Any, Any, Any],
                  body: Callable[[], Awaitable[object]]) -> None:  # fmt: skip
    await app.initialize()
    await app.start()
    assert app.updater is not None

    def to_error_handlers(error: TelegramError) -> None:
        # What run_polling does: polling errors go to the application's error handlers.
        app.create_task(app.process_error(error=error, update=None))

    await app.updater.start_polling(timeout=1, poll_interval=0, error_callback=to_error_handlers)
    try:
        await body()
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()


async def test_command_reaches_a_handler_and_the_reply_is_recorded(tg: FakeTelegram) -> None:
    app = build(tg)

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_html(f"<b>hello</b> {context.args}")

    app.add_handler(CommandHandler("start", start))

    async def body() -> None:
        tg.push_command(77, "/start now", username="alice")
        await until(lambda: len(tg.sent_messages(77)) == 1, 10, "the reply")

    await polling(app, body)
    [reply] = tg.sent_messages(77)
    assert reply["text"] == "<b>hello</b> ['now']"
    assert reply["parse_mode"] == "HTML"
    methods = [method for _, method, _ in tg.calls]
    assert methods[:2] == ["getMe", "deleteWebhook"]
    assert methods[-1] == "getUpdates"
    assert tg.calls[-1][2].get("timeout") == 0  # the last poll only confirms the offset
    assert tg.pending_updates() == 0


async def test_command_addressed_to_the_bot_by_name_in_a_group_is_matched(
    tg: FakeTelegram,
) -> None:
    app = build(tg)
    seen: list[int] = []

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None
        seen.append(update.effective_chat.id)

    app.add_handler(CommandHandler("start", start))

    async def body() -> None:
        tg.push_command(5, f"/start@{tg.username}", chat_type="supergroup")
        await until(lambda: bool(seen), 10, "the group command")

    await polling(app, body)
    assert seen == [-1000000005]


async def test_injected_409_reaches_the_application_error_handler(tg: FakeTelegram) -> None:
    app = build(tg)
    errors: list[object] = []

    async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        errors.append(context.error)

    app.add_error_handler(on_error)
    tg.inject("getUpdates", 409, "Conflict: terminated by other getUpdates request")

    async def body() -> None:
        await until(lambda: bool(errors), 10, "the conflict in the error handler")

    await polling(app, body)
    assert isinstance(errors[0], Conflict)


@pytest.mark.slow
async def test_overlapping_polls_of_one_token_get_409_and_are_counted(tg: FakeTelegram) -> None:
    first, second = build(tg), build(tg)
    errors: list[object] = []

    async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        errors.append(context.error)

    second.add_error_handler(on_error)

    async def body() -> None:
        await until(lambda: tg.polls_by_token[TOKEN] >= 2, 10, "the first long poll")
        await polling(second, lambda: until(lambda: bool(errors), 10, "a 409 for the second bot"))

    await polling(first, body)
    assert isinstance(errors[0], Conflict)
    assert tg.max_concurrent_polls >= 2
    assert tg.conflicts_by_token[TOKEN] >= 1
    assert len({p.peer for p in tg.polls}) >= 2  # two clients, told apart by connection


async def test_polls_of_different_tokens_do_not_conflict(tg: FakeTelegram) -> None:
    first, second = build(tg), build(tg, OTHER_TOKEN)

    async def body() -> None:
        await polling(
            second, lambda: until(lambda: tg.polls_by_token[OTHER_TOKEN] >= 2, 10, "polls")
        )

    await polling(first, body)
    assert not tg.conflicts_by_token


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<b>open", "can't parse entities"),
        ("<b><i>x</b></i>", "can't parse entities"),
        ("<div>x</div>", "can't parse entities"),
        ("1 < 2", "can't parse entities"),
        ("Tom & Jerry", "can't parse entities"),
        ("&nbsp;", "can't parse entities"),
        ('<span class="x">s</span>', "can't parse entities"),
        ("x" * 4097, "message is too long"),
    ],
)
async def test_bad_html_is_refused_like_telegram(tg: FakeTelegram, text: str, reason: str) -> None:
    app = build(tg)
    async with app:
        with pytest.raises(BadRequest, match="(?i)" + reason):
            await app.bot.send_message(chat_id=1, text=text, parse_mode="HTML")
    assert tg.sent_messages() == []
    assert reason in tg.rejected[0][1]


@pytest.mark.parametrize(
    "text",
    [
        "<b>b</b> <strong>s</strong> <i>i</i> <em>e</em> <u>u</u> <ins>n</ins> <s>s</s>",
        '<a href="https://example.org/?a=1&amp;b=2">link</a> &lt;&gt;&amp;&quot; &#8364;',
        '<span class="tg-spoiler">x</span> <tg-spoiler>y</tg-spoiler> <code>c</code>',
        '<pre><code class="language-python">x = 1</code></pre><blockquote>q</blockquote>',
        "<b>" + "x" * 4096 + "</b>",  # tags do not count towards the limit
    ],
)
def test_valid_html_is_accepted(text: str) -> None:
    assert check_html(text) is None


async def test_retry_after_and_other_methods_round_trip(tg: FakeTelegram) -> None:
    app = build(tg)
    tg.inject("sendMessage", 429, "Too Many Requests: retry after 3", retry_after=3)
    async with app:
        with pytest.raises(RetryAfter) as caught:
            await app.bot.send_message(chat_id=9, text="hi")
        assert caught.value.retry_after == timedelta(seconds=3)
        sent = await app.bot.send_message(chat_id=9, text="plain")
        edited = await app.bot.edit_message_text("<i>edited</i>", chat_id=9,
                                                 message_id=sent.message_id, parse_mode="HTML")  # fmt: skip
        assert not isinstance(edited, bool)
        assert edited.text == "<i>edited</i>"
        assert await app.bot.delete_message(chat_id=9, message_id=sent.message_id)
        assert await app.bot.send_chat_action(chat_id=9, action="typing")
        assert await app.bot.set_my_commands([("start", "Start")])
        invoice = await app.bot.send_invoice(chat_id=9, title="Pro", description="30 days",
                                             payload="pro:9", currency="XTR",
                                             prices=[LabeledPrice("Pro", 250)], provider_token="")  # fmt: skip
        assert invoice.invoice is not None
        assert invoice.invoice.total_amount == 250
        assert await app.bot.refund_star_payment(user_id=9, telegram_payment_charge_id="ch-1")
    assert [m["text"] for m in tg.sent_messages(9)] == ["plain"]
    assert tg.edits[0]["message_id"] == sent.message_id
    assert tg.deleted == [(9, sent.message_id)]
    assert tg.chat_actions[0]["action"] == "typing"
    assert tg.commands == [{"command": "start", "description": "Start"}]
    assert tg.invoices[0]["currency"] == "XTR"
    assert tg.invoices[0]["prices"][0]["amount"] == 250
    assert tg.refunds[0]["telegram_payment_charge_id"] == "ch-1"


async def test_stars_payment_updates_reach_the_handlers(tg: FakeTelegram) -> None:
    from telegram.ext import MessageHandler, PreCheckoutQueryHandler, filters

    app = build(tg)
    paid: list[str] = []

    async def pre_checkout(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.pre_checkout_query is not None
        await update.pre_checkout_query.answer(ok=update.pre_checkout_query.total_amount == 250)

    async def success(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        assert update.message.successful_payment is not None
        paid.append(update.message.successful_payment.telegram_payment_charge_id)

    app.add_handler(PreCheckoutQueryHandler(pre_checkout))
    app.add_handler(MessageHandler(filters.SUCCESSFUL_PAYMENT, success))

    async def body() -> None:
        tg.push_pre_checkout(3, "pro:3", 250)
        tg.push_pre_checkout(3, "pro:3", 1)
        tg.push_successful_payment(3, "pro:3", "charge-9", 250)
        await until(lambda: len(tg.answers) == 2 and bool(paid), 10, "payment handling")

    await polling(app, body)
    assert [a["ok"] for a in tg.answers] == [True, False]
    assert paid == ["charge-9"]


def test_wait_for_messages_fails_at_its_deadline(tg: FakeTelegram) -> None:
    with pytest.raises(AssertionError, match="1 messages to 5"):
        tg.wait_for_messages(5, 1, timeout=0.05)


def test_standalone_process_prints_its_url_and_obeys_control(tmp_path: Path) -> None:
    env = dict(os.environ, NO_PROXY="127.0.0.1,localhost")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.telegram_api", "--port", "0"],
        cwd=root, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")

        def post(path: str, payload: dict[str, Any]) -> Any:
            request = urllib.request.Request(url + path, json.dumps(payload).encode(),
                                             {"Content-Type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(request, timeout=5) as reply:
                return json.load(reply)

        assert post("/_control/push_command", {"user_id": 1, "text": "/start"})["update_id"] == 1
        post("/_control/push_command", {"user_id": 1, "text": "/buy", "sent_at": 1_700_000_000})
        updates = post(f"/bot{TOKEN}/getUpdates", {"timeout": 0})
        assert updates["result"][0]["message"]["entities"][0]["type"] == "bot_command"
        assert updates["result"][1]["message"]["date"] == 1_700_000_000
        post(f"/bot{TOKEN}/sendMessage", {"chat_id": 1, "text": "hi"})
        with urllib.request.urlopen(url + "/_control/sent?chat_id=1", timeout=5) as reply:
            assert [m["text"] for m in json.load(reply)] == ["hi"]
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
        assert proc.returncode == 0


async def test_button_press_reaches_a_callback_handler_and_is_answered(tg: FakeTelegram) -> None:
    from telegram.ext import CallbackQueryHandler

    app = build(tg)

    async def pressed(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.callback_query is not None
        await update.callback_query.answer(text=f"got {update.callback_query.data}")

    app.add_handler(CallbackQueryHandler(pressed))

    async def body() -> None:
        query_id = tg.push_callback_query(8, "close:42")
        await until(lambda: bool(tg.callback_answers), 10, "the answer")
        assert tg.callback_answers[0]["callback_query_id"] == query_id

    await polling(app, body)
    assert tg.callback_answers[0]["text"] == "got close:42"


async def sends(app: Application[Any, Any, Any, Any, Any, Any], chat_ids: list[int]) -> list[Any]:
    """Send one message to each of `chat_ids` at once; each result or error, in order."""
    return await asyncio.gather(
        *(app.bot.send_message(chat_id=chat, text="hi") for chat in chat_ids),
        return_exceptions=True,
    )


async def test_a_burst_past_the_bots_limit_of_30_a_second_gets_429_with_retry_after() -> None:
    # The burst arrives at one instant, however slowly this machine delivers it.
    with FakeTelegram(flood_clock=lambda: 1000.0) as tg:
        app = build(tg)
        async with app:
            results = await sends(app, list(range(1, 101)))  # one message to each of 100 users
    refused = [r for r in results if isinstance(r, RetryAfter)]
    assert len(refused) == 70  # a burst of 30 passes, the rest wait
    waits = [r.retry_after for r in refused]
    assert all(isinstance(wait, timedelta) and wait >= timedelta(seconds=1) for wait in waits)
    assert tg.too_many_requests == len(refused) == 100 - len(tg.sent_messages())


async def test_more_than_a_message_a_second_to_one_user_gets_429_and_the_wait_is_enforced(
    tg: FakeTelegram,
) -> None:
    app = build(tg)
    async with app:
        results = await sends(app, [7] * 5)
        refused = [r for r in results if isinstance(r, RetryAfter)]
        assert len(refused) == 2
        assert len(tg.sent_messages(7)) == 3  # a burst of 3 passes
        # Told to wait: sending again before the wait is over is refused again.
        with pytest.raises(RetryAfter):
            await app.bot.send_message(chat_id=7, text="too soon")
        assert len(tg.sent_messages(8)) == 0
        await app.bot.send_message(chat_id=8, text="another user is not held up")
    assert len(tg.sent_messages(8)) == 1


async def test_more_than_twenty_messages_a_minute_to_one_group_get_429(tg: FakeTelegram) -> None:
    app = build(tg)
    group = -1000000005
    async with app:
        results = await sends(app, [group] * 8)
    refused = [r for r in results if isinstance(r, RetryAfter)]
    assert len(tg.sent_messages(group)) == 5
    assert len(refused) == 3  # a burst of 5 passes
    # 20 a minute: the next one is allowed about 3 s later, and the wait says so.
    assert all(r.retry_after == timedelta(seconds=3) for r in refused)


async def test_a_user_who_blocked_the_bot_gets_403_and_its_update_is_sent(
    tg: FakeTelegram,
) -> None:
    from telegram.error import Forbidden

    app = build(tg)
    tg.block(11)
    async with app:
        with pytest.raises(Forbidden, match="bot was blocked by the user"):
            await app.bot.send_message(chat_id=11, text="hi")
        [update] = await app.bot.get_updates(timeout=0)
        assert update.my_chat_member is not None
        assert update.my_chat_member.new_chat_member.status == "kicked"
        tg.unblock(11)
        await app.bot.send_message(chat_id=11, text="welcome back")
        [_, again] = await app.bot.get_updates(timeout=0)
        assert again.my_chat_member is not None
        assert again.my_chat_member.new_chat_member.status == "member"
    assert tg.forbidden == 1
    assert tg.messages_to(11) == ["welcome back"]


async def test_the_friendly_server_lets_every_send_through() -> None:
    with FakeTelegram(flood_limits=False) as tg:
        app = build(tg)
        async with app:
            results = await sends(app, [7] * 40 + list(range(100, 160)))
        assert not [r for r in results if isinstance(r, Exception)]
        assert len(tg.sent_messages()) == 100
        assert tg.too_many_requests == 0


async def test_a_group_upgraded_to_a_supergroup_answers_with_the_new_chat_id(
    tg: FakeTelegram,
) -> None:
    from telegram.error import ChatMigrated

    app = build(tg)
    tg.migrate(-5, -1000000000005)
    async with app:
        with pytest.raises(ChatMigrated) as caught:
            await app.bot.send_message(chat_id=-5, text="hi")
        await app.bot.send_message(chat_id=caught.value.new_chat_id, text="hi")
    assert caught.value.new_chat_id == -1000000000005
    assert tg.messages_to(-1000000000005) == ["hi"]


async def test_each_bot_token_has_its_own_flood_limits(tg: FakeTelegram) -> None:
    first, second = build(tg), build(tg, OTHER_TOKEN)
    async with first, second:
        results = [
            *await sends(first, list(range(1, 11))),  # the burst of one bot
            *await sends(second, list(range(1, 11))),  # and of another, to the same users
        ]
    assert not [r for r in results if isinstance(r, Exception)]
    assert tg.too_many_requests == 0


async def test_only_the_kinds_of_update_asked_for_are_delivered_and_the_ask_is_recorded(
    tg: FakeTelegram,
) -> None:
    app = Application.builder().token(TOKEN).base_url(tg.base_url + "/bot").build()
    await app.bot.initialize()
    try:
        tg.push_update("channel_post", {"message_id": 1, "date": 0,
                                        "chat": {"id": -5, "type": "channel"}, "text": "hi"})  # fmt: skip
        tg.push_command(7, "/start")
        reaction = tg.push_update("message_reaction", {"chat": {"id": 7, "type": "private"},
                                                       "message_id": 2, "date": 0,
                                                       "old_reaction": [], "new_reaction": []})  # fmt: skip
        got = await app.bot.get_updates(timeout=0, allowed_updates=["message"])
        assert [u.message is not None for u in got] == [True]
        assert tg.allowed_updates_asked == [["message"]]
        tg.push_callback_query(7, "data")
        again = await app.bot.get_updates(offset=got[-1].update_id + 1, timeout=0)
        assert again == ()  # the last allowed_updates stands when none is given
        assert [next(iter(u.keys() - {"update_id"})) for u in tg.withheld] == [
            "channel_post", "message_reaction", "callback_query"
        ]  # fmt: skip
        assert reaction in {u["update_id"] for u in tg.withheld}
    finally:
        await app.bot.shutdown()


async def test_messages_carry_the_date_they_were_sent_and_edits_come_as_their_own_kind(
    tg: FakeTelegram,
) -> None:
    app = Application.builder().token(TOKEN).base_url(tg.base_url + "/bot").build()
    await app.bot.initialize()
    try:
        typed = tg.push_command(7, "/buy BTCUSDT 10", sent_at=1_700_000_000)
        tg.push_edit(typed, "/sell BTCUSDT")
        first, edit = await app.bot.get_updates(timeout=0)
    finally:
        await app.bot.shutdown()
    assert first.message is not None
    assert first.message.date.timestamp() == 1_700_000_000
    assert edit.message is None
    assert edit.edited_message is not None
    assert edit.edited_message.message_id == first.message.message_id
    assert edit.edited_message.text == "/sell BTCUSDT"
    assert edit.edited_message.edit_date
    assert edit.edited_message.entities[0].length == len("/sell")
