"""The account service against a real SQLite database: the rules it holds itself (the
plan in force and its position and symbol limits, reactivation, settings checked before they are
saved, refunds through the call it is handed)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiosqlite
import pytest

from lunara import accounts, payments
from lunara.accounts import AccountService, SymbolLimitReached
from lunara.crypto import KeyRing, generate_key
from lunara.plans import PLAN_PERIOD_S, PLANS, PlanName
from lunara.services import TradingError
from lunara.storage import credentials, user_settings, users
from lunara.storage.database import InvalidValue, RecordNotFound, open_database

NOW = 1_800_000_000.0
TRADER = 424242
PRO = PLANS[PlanName.PRO]
FREE = PLANS[PlanName.FREE]


def no_keyring() -> KeyRing:
    raise AssertionError("these tests store no keys")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await open_database(tmp_path / "lunara.db")
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def service(db: aiosqlite.Connection) -> AccountService:
    return AccountService(db, no_keyring, clock=lambda: NOW)


async def test_start_registers_a_newcomer_and_reactivates_one_who_blocked_the_bot(
    db: aiosqlite.Connection, service: AccountService
) -> None:
    newcomer = await service.start(TRADER, "trader")
    assert newcomer.active
    await users.set_active(db, TRADER, False)
    back = await service.start(TRADER, "trader")
    assert back.active
    stored = await users.get(db, TRADER)
    assert stored is not None
    assert stored.active


async def test_set_active_changes_a_known_user_and_reports_a_stranger(
    db: aiosqlite.Connection, service: AccountService
) -> None:
    await service.register(TRADER, None)
    assert await service.set_active(TRADER, False)
    stored = await users.get(db, TRADER)
    assert stored is not None
    assert not stored.active
    assert not await service.set_active(TRADER + 1, False)
    assert await users.get(db, TRADER + 1) is None


async def test_the_position_limit_is_the_plan_in_force(
    db: aiosqlite.Connection, service: AccountService
) -> None:
    await service.register(TRADER, None)
    pro = await users.set_plan(db, TRADER, PlanName.PRO.value, NOW + PLAN_PERIOD_S)
    assert service.plan_of(pro) == PRO
    assert service.position_limit(pro, PRO.max_open_positions - 1) is None
    assert service.position_limit(pro, PRO.max_open_positions) == PRO


async def test_a_lapsed_plan_limits_positions_as_the_free_plan(
    db: aiosqlite.Connection, service: AccountService
) -> None:
    await service.register(TRADER, None)
    lapsed = await users.set_plan(db, TRADER, PlanName.PRO.value, NOW)
    assert service.plan_of(lapsed) == FREE
    assert service.position_limit(lapsed, FREE.max_open_positions) == FREE
    assert accounts.position_limit_reached(FREE, FREE.max_open_positions)
    assert not accounts.position_limit_reached(FREE, FREE.max_open_positions - 1)


async def test_new_symbols_are_checked_before_they_are_saved(
    db: aiosqlite.Connection, service: AccountService
) -> None:
    await service.register(TRADER, None)
    asked: list[Sequence[str]] = []

    async def refuse(symbols: Sequence[str]) -> None:
        asked.append(symbols)
        raise TradingError("Binance does not list NOPEUSDT")

    with pytest.raises(TradingError, match="NOPEUSDT"):
        await service.update_settings(TRADER, {"symbols": "btcusdt,nopeusdt"}, refuse, ())
    assert asked == [("BTCUSDT", "NOPEUSDT")]
    assert (await service.settings(TRADER)).symbols == ()


BOT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def test_the_symbols_that_count_are_the_listed_ones_or_all_the_bots_in_auto_mode() -> None:
    listed = ("SOLUSDT", "BTCUSDT", "ETHUSDT")
    assert accounts.watched_symbols(listed, BOT_SYMBOLS, auto_mode=False) == listed
    assert accounts.watched_symbols((), BOT_SYMBOLS, auto_mode=True) == BOT_SYMBOLS
    assert accounts.watched_symbols((), BOT_SYMBOLS, auto_mode=False) == ()
    assert accounts.symbols_in_plan(FREE, listed, BOT_SYMBOLS) == ("SOLUSDT", "BTCUSDT")
    assert accounts.symbols_in_plan(FREE, (), BOT_SYMBOLS) == ("BTCUSDT", "ETHUSDT")
    assert accounts.symbols_in_plan(PRO, listed, BOT_SYMBOLS) == listed


async def test_settings_beyond_the_plans_symbols_are_refused_before_the_exchange_is_asked(
    db: aiosqlite.Connection, service: AccountService
) -> None:
    await service.register(TRADER, None)

    async def must_not_ask(symbols: Sequence[str]) -> None:
        raise AssertionError(f"asked about {symbols}")

    with pytest.raises(SymbolLimitReached) as listed:
        await service.update_settings(
            TRADER, {"symbols": ",".join(BOT_SYMBOLS)}, must_not_ask, BOT_SYMBOLS
        )
    assert (listed.value.plan, listed.value.wanted, listed.value.every) == (FREE, 3, False)
    with pytest.raises(SymbolLimitReached) as every:
        await service.update_settings(TRADER, {"auto_mode": "on"}, must_not_ask, BOT_SYMBOLS)
    assert (every.value.wanted, every.value.every) == (3, True)
    assert await service.settings(TRADER) == user_settings.UserSettings(user_id=TRADER)
    # A lapsed Pro plan is the free plan; a running one allows the three.
    await users.set_plan(db, TRADER, PlanName.PRO.value, NOW)
    with pytest.raises(SymbolLimitReached):
        await service.update_settings(TRADER, {"auto_mode": "on"}, must_not_ask, BOT_SYMBOLS)
    await users.set_plan(db, TRADER, PlanName.PRO.value, NOW + PLAN_PERIOD_S)

    async def listed_on_binance(symbols: Sequence[str]) -> None:
        return None

    saved = await service.update_settings(
        TRADER, {"auto_mode": "on"}, listed_on_binance, BOT_SYMBOLS
    )
    assert saved.auto_mode


async def test_settings_without_symbols_ask_the_exchange_nothing(
    service: AccountService,
) -> None:
    await service.register(TRADER, None)

    async def must_not_ask(symbols: Sequence[str]) -> None:
        raise AssertionError(f"asked about {symbols}")

    saved = await service.update_settings(TRADER, {"stake_usdt": "25"}, must_not_ask, ())
    assert str(saved.stake_usdt) == "25"
    with pytest.raises(InvalidValue):
        await service.update_settings(TRADER, {"stoploss": "lots"}, must_not_ask, ())
    assert await service.settings(TRADER) == saved


async def test_a_refund_calls_telegram_once_and_takes_the_plan_back(
    db: aiosqlite.Connection, service: AccountService
) -> None:
    await service.register(TRADER, None)
    payload = payments.invoice_payload(PRO, TRADER)
    await service.record_payment(
        TRADER, payload, "charge-1", PRO.price_stars, currency=payments.STARS
    )
    calls: list[tuple[int, str]] = []

    async def refund(user_id: int, charge_id: str) -> None:
        calls.append((user_id, charge_id))

    first, payment = await service.refund_payment(refund, "charge-1")
    again, _ = await service.refund_payment(refund, "charge-1")
    assert (first, again) == (accounts.Refund.REFUNDED, accounts.Refund.ALREADY)
    assert calls == [(TRADER, "charge-1")]
    assert payment.refunded_at is not None
    user = await users.get(db, TRADER)
    assert user is not None
    assert service.plan_of(user) == FREE


async def test_a_user_is_registered_with_the_username_kept_current(
    service: AccountService,
) -> None:
    assert await service.user(TRADER) is None
    started = await service.start(TRADER, "trader")
    assert started.username == "trader"
    renamed = await service.register(TRADER, "trader_two")
    assert renamed.username == "trader_two"
    assert await service.user(TRADER) == renamed
    assert await service.user(TRADER + 1) is None


async def test_users_are_listed_a_page_at_a_time_in_registration_order(
    service: AccountService,
) -> None:
    for offset in range(5):
        await service.register(TRADER + offset, f"user{offset}")
    page = await service.users_page(offset=1, limit=2)
    assert [user.telegram_id for user in page.users] == [TRADER + 1, TRADER + 2]
    assert (page.total, page.offset, page.limit) == (5, 1, 2)


async def test_keys_are_stored_encrypted_with_the_deployments_keyring(
    db: aiosqlite.Connection,
) -> None:
    keyring = KeyRing([generate_key()])
    service = AccountService(db, lambda: keyring, clock=lambda: NOW)
    await service.register(TRADER, None)
    api_key, api_secret = "k" * 60 + "WXYZ", "s" * 64
    info = await service.store_keys(TRADER, api_key, api_secret)
    assert (info.user_id, info.exchange) == (TRADER, credentials.Exchange.BINANCE)
    loaded = await credentials.load(db, keyring, TRADER, credentials.Exchange.BINANCE)
    assert loaded == credentials.ApiCredentials(api_key, api_secret)
    stored = b"".join(
        str(value).encode()
        for row in await db.execute_fetchall("SELECT * FROM exchange_credentials")
        for value in row
    )
    assert api_secret.encode() not in stored


async def test_refunding_a_charge_never_recorded_asks_telegram_nothing(
    service: AccountService,
) -> None:
    async def refund(user_id: int, charge_id: str) -> None:
        raise AssertionError(f"asked Telegram to refund {charge_id} of {user_id}")

    with pytest.raises(RecordNotFound, match=r"^payment charge-0 is not recorded$"):
        await service.refund_payment(refund, "charge-0")
