"""Market data: the seeded simulator, candle building, replay from a file, and Binance."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from tenacity import wait_none

from lunara.analysis.candles import Candle
from lunara.trading.binance import BinanceGateway, RetryPolicy
from lunara.trading.exchange import ExchangeUnavailable
from lunara.trading.limiter import WeightLimiter
from lunara.trading.market import BinanceMarket, CandleBuilder, ReplayMarket, SimMarket
from tests.fakes.binance_api import FakeBinance


async def test_the_sim_market_is_deterministic_for_a_seed_and_independent_per_symbol() -> None:
    first, second, other = SimMarket(seed=9), SimMarket(seed=9), SimMarket(seed=10)
    wider = SimMarket(seed=9)
    runs = []
    for market, symbols in (
        (first, ["BTCUSDT"]),
        (second, ["BTCUSDT"]),
        (wider, ["BTCUSDT", "ETHUSDT"]),
    ):
        runs.append([(await market.tick(symbols, 0.0)).prices["BTCUSDT"] for _ in range(50)])
    assert runs[0] == runs[1] == runs[2]
    assert [(await other.tick(["BTCUSDT"], 0.0)).prices["BTCUSDT"] for _ in range(50)] != runs[0]
    assert len(await first.history("BTCUSDT", 500)) >= 200


async def test_candles_close_when_a_price_falls_into_the_next_interval() -> None:
    builder = CandleBuilder(60)
    assert builder.add("BTCUSDT", 0.0, 10.0) is None
    assert builder.add("BTCUSDT", 30.0, 12.0) is None
    assert builder.add("BTCUSDT", 45.0, 9.0) is None
    closed = builder.add("BTCUSDT", 61.0, 11.0)
    assert closed is not None
    assert (closed.open, closed.high, closed.low, closed.close) == (10.0, 12.0, 9.0, 9.0)


async def test_replay_plays_recorded_klines_one_candle_per_tick(tmp_path: Path) -> None:
    path = tmp_path / "klines.csv"
    rows = ["open_time,open,high,low,close,volume"]
    rows += [f"{i * 60_000},{100 + i},{101 + i},{99 + i},{100.5 + i},1" for i in range(3)]
    path.write_text("\n".join(rows) + "\n")
    market = ReplayMarket(path)
    assert market.interval_s == 60
    closes = []
    for _ in range(4):
        tick = await market.tick(["BTCUSDT"], 0.0)
        closes.append(str(tick.prices["BTCUSDT"]))
    assert closes == ["100.5", "101.5", "102.5", "102.5"]
    assert len(await market.history("BTCUSDT", 10)) == 3


# BinanceMarket: the real python-binance client against the local fake Binance server.

MINUTE = 60
START_S = 1_800_000_000 // MINUTE * MINUTE  # a minute boundary


class SteppedClock:
    """The wall clock of a test, shared by the bot's market and the fake's klines."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def binance() -> Iterator[FakeBinance]:
    prices = {"BTCUSDT": Decimal(50000), "ETHUSDT": Decimal(3000), "SOLUSDT": Decimal(150)}
    with FakeBinance(prices=prices) as server:
        yield server


def _gateway(fake: FakeBinance, *, rules_ttl_s: float = 3600.0) -> BinanceGateway:
    return BinanceGateway(
        base_url=fake.base_url,
        limiter=WeightLimiter(),
        timeout_s=2.0,
        retry=RetryPolicy(attempts=1, wait=wait_none()),
        rules_ttl_s=rules_ttl_s,
    )


def _asked(fake: FakeBinance) -> list[list[str]]:
    """The symbols of every ticker/price request, in order."""
    return [json.loads(r.params["symbols"]) for r in fake.recorded if r.endpoint == "ticker/price"]


async def test_one_unknown_symbol_costs_only_its_own_price_and_is_not_split_for_again(
    binance: FakeBinance, caplog: pytest.LogCaptureFixture
) -> None:
    market = BinanceMarket(_gateway(binance))
    wanted = ["BTCUSDT", "ETHUSDT", "NOPEUSDT", "SOLUSDT"]
    first = await market.tick(wanted, time.time())
    assert first.prices == {
        "BTCUSDT": Decimal(50000),
        "ETHUSDT": Decimal(3000),
        "SOLUSDT": Decimal(150),
    }
    assert first.unknown == {"NOPEUSDT"}
    assert _asked(binance)[0] == sorted(wanted)  # one batch first; split only on refusal
    requests_before = len(_asked(binance))
    second = await market.tick(wanted, time.time())
    assert second.prices == first.prices
    assert second.unknown == {"NOPEUSDT"}
    assert _asked(binance)[requests_before:] == [["BTCUSDT", "ETHUSDT", "SOLUSDT"]]
    named = [r for r in caplog.records if "NOPEUSDT" in r.getMessage()]
    assert len(named) == 1
    assert named[0].levelname == "WARNING"


async def test_a_refusal_other_than_an_unknown_symbol_is_not_split_but_raised(
    binance: FakeBinance,
) -> None:
    market = BinanceMarket(_gateway(binance))
    binance.inject("ticker/price", 503, -1001, "Internal error; unable to process your request.")
    with pytest.raises(ExchangeUnavailable):
        await market.prices(["BTCUSDT", "ETHUSDT"])
    assert len(_asked(binance)) == 1
    assert market.unknown == frozenset()


async def test_an_unknown_symbol_gets_prices_again_once_exchange_info_lists_it(
    binance: FakeBinance,
) -> None:
    market = BinanceMarket(_gateway(binance, rules_ttl_s=0.0))  # exchangeInfo re-read each time
    assert "NEWUSDT" not in (await market.tick(["BTCUSDT", "NEWUSDT"], time.time())).prices
    still = await market.tick(["BTCUSDT", "NEWUSDT"], time.time())
    assert still.unknown == {"NEWUSDT"}
    assert _asked(binance)[-1] == ["BTCUSDT"]
    binance.set_price("NEWUSDT", "2.5")  # Binance lists it now
    listed = await market.tick(["BTCUSDT", "NEWUSDT"], time.time())
    assert listed.prices["NEWUSDT"] == Decimal("2.5")
    assert listed.unknown == frozenset()


def _candle(row: list[object]) -> Candle:
    open_, high, low, close, volume = (float(str(value)) for value in row[1:6])
    return Candle(int(str(row[0])), open_, high, low, close, volume)


async def test_live_candles_are_binances_closed_klines_one_request_per_closed_minute(
    binance: FakeBinance,
) -> None:
    clock = SteppedClock(START_S + 10)
    binance.market_clock = clock
    market = BinanceMarket(_gateway(binance), history_limit=50, clock=clock)
    first = await market.tick(["BTCUSDT"], clock.now)
    warm = first.closed["BTCUSDT"]  # at first use: its history, before any live candle
    assert len(warm) == 50
    assert warm[-1].open_time == (START_S - MINUTE) * 1000  # the open candle was dropped
    assert binance.count("GET", "klines") == 1
    clock.now = START_S + 40
    assert (await market.tick(["BTCUSDT"], clock.now)).closed == {}
    assert binance.count("GET", "klines") == 1  # nothing closed: nothing asked
    binance.set_price("BTCUSDT", 50500)
    clock.now = START_S + MINUTE + 10
    live = (await market.tick(["BTCUSDT"], clock.now)).closed["BTCUSDT"]
    assert binance.count("GET", "klines") == 2
    asked = [r.params for r in binance.recorded if r.endpoint == "klines"][-1]
    assert asked["startTime"] == str(START_S * 1000)
    assert asked["interval"] == "1m"
    assert [c.open_time for c in live] == [START_S * 1000]
    rows = _gateway(binance).public.get_klines(
        symbol="BTCUSDT", interval="1m", startTime=(START_S - 50 * MINUTE) * 1000, limit=51
    )
    assert warm + live == [_candle(row) for row in rows]  # what /analyze and backtests read
    assert all(c.high > max(c.open, c.close) and c.volume > 0 for c in warm + live)
    assert await market.history("BTCUSDT", 500) == (warm + live)[-50:]  # /analyze's view


async def test_a_failed_klines_read_costs_no_price_and_is_caught_up_at_the_next_close(
    binance: FakeBinance,
) -> None:
    clock = SteppedClock(START_S + 10)
    binance.market_clock = clock
    market = BinanceMarket(_gateway(binance), history_limit=20, clock=clock)
    await market.tick(["ETHUSDT"], clock.now)
    binance.inject("klines", 503, -1001, "Internal error; unable to process your request.")
    clock.now = START_S + MINUTE + 5
    failed = await market.tick(["ETHUSDT"], clock.now)
    assert failed.prices == {"ETHUSDT": Decimal(3000)}
    assert failed.closed == {}
    clock.now = START_S + MINUTE + 30
    await market.tick(["ETHUSDT"], clock.now)
    assert binance.count("GET", "klines") == 2  # no retry within the same minute
    clock.now = START_S + 2 * MINUTE + 5
    caught_up = (await market.tick(["ETHUSDT"], clock.now)).closed["ETHUSDT"]
    assert [c.open_time for c in caught_up] == [START_S * 1000, (START_S + MINUTE) * 1000]
