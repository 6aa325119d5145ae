"""The one path every order takes, so that no order is ever placed twice.

1. The client order id is derived, not random: a hash of the trader, the intent (an
   entry on a symbol, or the exit of one position), the side and a sequence number.
2. The order is recorded as ``pending`` under that id *before* anything is sent.
3. A definite refusal (filters, -2010, bad keys) marks it ``rejected``; it is never
   sent again. A lost answer (timeout, dropped connection, 5xx, -1006, -1007) marks it
   ``unknown`` and the exchange is asked for the order by its client id (``GET /order``,
   whose database can lag, then ``allOrders``) until the recvWindow of the send has
   passed: only then can the exchange no longer accept it. Only an order it never
   took is sent again, and under a NEW client id (its successor): Binance accepts a
   filled order's id a second time, so the same id would buy twice.
4. A fill is settled in one transaction: the order marked ``filled`` with its real
   commission per asset, and the position opened (with the quantity the account
   received, net of a commission in the base asset), reduced (an exit the exchange
   expired part-filled: the rest stays open under its stop) or closed (recording what
   was sold, the residue left under the lot step, and the profit from what was really
   bought and sold). The trailing stop is then started or dropped.
5. An exit never asks to sell more than the account's free balance of the asset.
6. What an exit cannot sell because the exchange takes no order that small (below the
   minimum quantity; or, left by an earlier part-filled exit, below the minimum
   notional) closes the position as ``dust``: the remainder is recorded as residue and
   the profit is what was really sold. Anything else refused is refused: the caller
   retries an exit the stop still asks for.
7. An exit order keeps why it was placed; a stop's exit queues the trader's notice in
   the transaction that records it (``lunara.trading.notices``), so a crash can neither
   lose the notice of a recorded exit nor send one for an exit not recorded.

After a crash, ``recover`` walks the unsettled orders (pending, sent, unknown) and asks
the exchange about each one, and settles fills whose position change was not written.
All of one trader's order work runs under that trader's lock, so a recovery never
races a send.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

import aiosqlite

from blueprint.errors import BlueprintError
from lunara.services import TradingError
from lunara.storage import orders as order_store
from lunara.storage import outbox
from lunara.storage import positions as store
from lunara.storage.database import transaction
from lunara.storage.orders import Order
from lunara.storage.positions import Position
from lunara.trading import notices
from lunara.trading.exchange import (
    OPEN_ORDER_STATUSES,
    CredentialsRejected,
    DuplicateOrder,
    Exchange,
    ExchangeError,
    ExchangeUnavailable,
    Fill,
    OrderRefused,
    RateLimited,
)
from lunara.trading.filters import (
    SymbolRules,
    below_minimum_quantity,
    check_order,
    check_tradable,
    format_amount,
    quantity_for_quote,
    unsellable_remainder,
)
from lunara.trading.model import ExitReason, OrderSide, OrderStatus, PositionStatus
from lunara.trading.stops import StopStore
from lunara.trading.trailing import TrailingParams, initial_state

logger = logging.getLogger(__name__)

CLIENT_ORDER_ID_PREFIX = "lu-"
ENTRY_INTENT = "entry"
EXIT_INTENT = "exit"
# How many orders are sent for one request whose outcome stayed unknown, once the
# exchange is known never to have taken the earlier one. Each has its own client id.
MAX_SENDS = 2
RESEND_INTENT = "resend"
# python-binance signs every request with recvWindow 5000 ms: an order not on the
# exchange that long after it was signed can no longer be accepted. One second more
# for the clocks' disagreement.
DEFAULT_UNKNOWN_ORDER_WINDOW_S = 6.0
NOT_PLACED = "not placed: the exchange never took it"
NOT_PLACED_AFTER_RESTART = "not placed: the exchange has no such order (found after a restart)"

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
ExchangeFor = Callable[[int], Awaitable[Exchange]]


def client_order_id(user_id: int, intent: str, side: OrderSide, sequence: int) -> str:
    """Same inputs, same id: what makes a retried or recovered order recognisable.

    36 characters at most and only ``[A-Za-z0-9-]``, as Binance requires.
    """
    material = f"{user_id}|{intent}|{OrderSide(side).value}|{sequence}".encode()
    return CLIENT_ORDER_ID_PREFIX + hashlib.sha256(material).hexdigest()[:32]


def entry_intent(symbol: str, request_key: str | None = None) -> str:
    """A keyed entry (one per Telegram message) has one id whatever was ordered before it."""
    base = f"{ENTRY_INTENT}:{symbol}"
    return base if request_key is None else f"{base}:{request_key}"


def exit_intent(position_id: int) -> str:
    return f"{EXIT_INTENT}:{position_id}"


def successor_id(order: Order) -> str:
    """The id an order is sent again under once the exchange never took it: derived, so
    a restart finds it, and new, so Binance cannot take it for the first one."""
    return client_order_id(order.user_id, f"{RESEND_INTENT}:{order.client_order_id}", order.side, 0)


@dataclass(frozen=True)
class OrderRequest:
    """What to trade; ``reference_price`` values the order for the notional filter."""

    user_id: int
    symbol: str
    side: OrderSide
    quantity: Decimal
    reference_price: Decimal
    position_id: int | None = None
    exit_reason: str = ExitReason.MANUAL.value
    stop_params: TrailingParams | None = None
    request_key: str | None = None  # the same key asks for the same entry, once

    @property
    def keyed_entry_id(self) -> str | None:
        if self.side is not OrderSide.BUY or self.request_key is None:
            return None
        intent = entry_intent(self.symbol, self.request_key)
        return client_order_id(self.user_id, intent, self.side, 0)


@dataclass(frozen=True)
class Settlement:
    """A filled order and the position it opened or closed."""

    order: Order
    fill: Fill
    position: Position
    fee_in_quote: Decimal

    @property
    def price(self) -> Decimal:
        return self.fill.average_price


@dataclass
class RecoveryReport:
    settled: int = 0
    not_placed: int = 0
    still_unknown: int = 0


class OrderOutcomeUnknown(ExchangeError):
    """The exchange could not say whether the order went through; it will be checked again."""


class PositionLeftAsDust(TradingError):
    """The exit found only dust to sell: the position is closed with it as residue."""

    def __init__(self, position: Position, residue: Decimal, base_asset: str) -> None:
        super().__init__(
            f"the {format_amount(residue)} {base_asset} left of position {position.id} is "
            f"below the smallest order Binance takes for {position.symbol}; the position is "
            "closed and that remainder stays on your account (Binance can convert small "
            "balances to BNB)"
        )
        self.position = position
        self.residue = residue


def _quote_fee(fill: Fill, base_asset: str, quote_asset: str) -> Decimal:
    """The commission valued in the quote asset, as the ``orders.fee`` column holds it.

    A commission paid in a third asset (BNB) is not converted: it is recorded as paid,
    per asset, in ``orders.fees``.
    """
    fees = fill.fees_by_asset
    zero = Decimal(0)
    return fees.get(quote_asset, zero) + fees.get(base_asset, zero) * fill.average_price


def _split(symbol: str) -> tuple[str, str]:
    from lunara.trading.filters import split_symbol

    try:
        return split_symbol(symbol)
    except ValueError:
        return symbol, ""


class OrderPath:
    """Places, resolves and settles orders; shared by /buy, /sell, stops and auto mode."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        stops: StopStore,
        *,
        default_stop_params: Callable[[int], Awaitable[TrailingParams]],
        clock: Clock = time.time,
        unknown_order_window_s: float = DEFAULT_UNKNOWN_ORDER_WINDOW_S,
        sleep: Sleep = asyncio.sleep,
        may_act: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        # Raises unless this instance holds the deployment's instance lease (fencing).
        self._may_act = may_act
        self._stops = stops
        self._default_stop_params = default_stop_params
        self._clock = clock
        self._unknown_window_s = unknown_order_window_s
        self._sleep = sleep
        # An order of an earlier process was signed before this one started.
        self._started_at = clock()
        self._sent_at: dict[str, float] = {}  # client id -> when this process signed it
        # One lock per trader with an order under way (or waiting): a lock nobody holds
        # or waits for is dropped, so a hundred thousand traders leave nothing behind.
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        self.placed = 0  # orders settled with a fill (for /metrics)
        self.failed = 0  # orders refused or rejected

    @property
    def tracked_locks(self) -> int:
        """Traders with a lock alive (held, waited for, or not yet collected)."""
        return len(self._locks)

    def lock_for(self, user_id: int) -> asyncio.Lock:
        lock = self._locks.get(user_id)
        if lock is None:
            lock = self._locks[user_id] = asyncio.Lock()
        return lock

    @property
    def busy(self) -> bool:
        """Some order is being worked on right now (the shutdown waits for it)."""
        return any(lock.locked() for lock in list(self._locks.values()))

    async def until_idle(self) -> None:
        """Return once no order is being worked on (the shutdown waits for this): each
        held lock is waited for in turn, woken by its release rather than by polling."""
        while held := [lock for lock in list(self._locks.values()) if lock.locked()]:
            for lock in held:
                async with lock:
                    pass

    async def submit(self, exchange: Exchange, request: OrderRequest) -> Settlement:
        """Place ``request`` exactly once; raises ``TradingError`` with the reason if refused."""
        async with self.lock_for(request.user_id):
            keyed = request.keyed_entry_id
            earlier = None if keyed is None else await order_store.get_order(self._db, keyed)
            if earlier is not None:
                return await self._resume_entry(exchange, earlier, request)
            rules = await exchange.symbol_rules(request.symbol)
            wanted = request.quantity
            if request.side is OrderSide.SELL:
                if request.position_id is None:
                    raise TradingError("an exit order needs the position it closes")
                check_tradable(rules)
                done = await self._resume_exit(exchange, request)
                if done is not None:
                    return done
                wanted = await self._sellable(exchange, rules.base_asset, request)
                await self._close_if_dust(rules, wanted, request)
            quantity = check_order(rules, wanted, request.reference_price)
            order = await self._record(request, quantity)
            return await self._send_and_settle(exchange, order, request)

    async def enter(
        self,
        exchange: Exchange,
        user_id: int,
        symbol: str,
        quote_amount: Decimal,
        price: Decimal,
        stop_params: TrailingParams,
        request_key: str | None = None,
    ) -> Settlement:
        """Buy ``quote_amount`` worth of ``symbol`` (e.g. 100 USDT of BTC) at about
        ``price``: the quantity is sized by the symbol's rules, and the position it opens
        gets a stop with ``stop_params``."""
        rules = await exchange.symbol_rules(symbol)
        request = OrderRequest(
            user_id=user_id,
            symbol=symbol,
            side=OrderSide.BUY,
            quantity=quantity_for_quote(rules, quote_amount, price),
            reference_price=price,
            stop_params=stop_params,
            request_key=request_key,
        )
        return await self.submit(exchange, request)

    async def exit(
        self, exchange: Exchange, user_id: int, position: Position, price: Decimal, reason: str
    ) -> Settlement:
        """Sell ``position`` at about ``price``, recording ``reason`` (an ``ExitReason``)."""
        request = OrderRequest(
            user_id=user_id,
            symbol=position.symbol,
            side=OrderSide.SELL,
            quantity=position.quantity,
            reference_price=price,
            position_id=position.id,
            exit_reason=reason,
        )
        return await self.submit(exchange, request)

    async def _record(self, request: OrderRequest, quantity: Decimal) -> Order:
        if request.keyed_entry_id is not None:
            return await order_store.record_pending_order(
                self._db,
                request.keyed_entry_id,
                request.user_id,
                request.symbol,
                request.side,
                quantity,
                position_id=None,
                now=self._clock(),
            )
        if request.side is OrderSide.BUY:
            intent, sequence, reason = (
                entry_intent(request.symbol),
                await self._order_count(request.user_id),
                None,
            )
        else:
            assert request.position_id is not None
            intent = exit_intent(request.position_id)
            sequence = len(await order_store.orders_of_position(self._db, request.position_id))
            reason = request.exit_reason
        # The count of the trader's (or the position's) orders only grows, so the id is
        # always new: however many earlier orders were refused, nothing is probed.
        return await order_store.record_pending_order(
            self._db,
            client_order_id(request.user_id, intent, request.side, sequence),
            request.user_id,
            request.symbol,
            request.side,
            quantity,
            position_id=request.position_id,
            exit_reason=reason,
            now=self._clock(),
        )

    async def _sellable(self, exchange: Exchange, asset: str, request: OrderRequest) -> Decimal:
        """The position's quantity, or less if the account holds less of it (a fee taken
        in the asset, dust sold elsewhere): asking for more is refused -2010 each time."""
        free = next((b.free for b in await exchange.balances() if b.asset == asset), Decimal(0))
        if free >= request.quantity:
            return request.quantity
        logger.warning(
            "position %s of user %d: the account holds %s %s, less than the %s recorded; "
            "selling what is there",
            request.position_id,
            request.user_id,
            free,
            asset,
            request.quantity,
        )
        return free

    async def _close_if_dust(
        self, rules: SymbolRules, sellable: Decimal, request: OrderRequest
    ) -> None:
        """Close the position as dust when no order can sell what is left of it.

        Below the minimum quantity nothing sells at any price. Below the minimum notional
        only the remainder of a part-sold position counts as dust: a whole position worth
        too little after a fall is refused, and its exit is tried again while the stop
        asks for it (the price may come back). Nothing held at all is refused too: the
        asset may be locked in an order the trader placed by hand.
        """
        assert request.position_id is not None
        position = await store.get(self._db, request.position_id)
        if position is None or position.status is not PositionStatus.OPEN:
            return
        if sellable <= 0:
            return
        if position.sold_quantity > 0:
            dust = unsellable_remainder(rules, sellable, request.reference_price)
        else:
            dust = below_minimum_quantity(rules, sellable)
        if not dust:
            return
        residue = position.quantity  # what it holds: nothing of it was sold
        async with transaction(self._db):
            closed = await store.close(
                self._db,
                position.id,
                request.reference_price,
                ExitReason.DUST.value,
                None,
                sold=Decimal(0),
                proceeds=Decimal(0),
                now=self._clock(),
            )
            left_as_dust = PositionLeftAsDust(closed, residue, rules.base_asset)
            if notices.told_of(request.exit_reason):
                await outbox.enqueue(self._db, [notices.dust_notice(closed, left_as_dust.message)])
        await self._stops.remove(position.id)
        logger.warning(
            "position %d of user %d: %s %s left is below the smallest order for %s; closed as dust",
            position.id,
            position.user_id,
            residue,
            rules.base_asset,
            position.symbol,
        )
        raise left_as_dust

    async def _successor(self, order: Order) -> Order:
        """Record the order that replaces one the exchange never took (a new client id)."""
        return await order_store.record_pending_order(
            self._db,
            successor_id(order),
            order.user_id,
            order.symbol,
            order.side,
            order.quantity,
            position_id=order.position_id,
            exit_reason=order.exit_reason,
            now=self._clock(),
        )

    async def _latest(self, order: Order) -> Order:
        """The last of an order's successors, the one that stands for the request now."""
        while order.status is OrderStatus.REJECTED:
            following = await order_store.get_order(self._db, successor_id(order))
            if following is None:
                break
            order = following
        return order

    async def _resolve(self, exchange: Exchange, order: Order) -> Fill | None:
        """The fill of an order whose outcome is unknown; ``None`` once it is certain the
        exchange never took it.

        Not found is only certain after the recvWindow of its send: until then Binance
        may still accept it, or have accepted it without its database showing it yet.
        """
        deadline = self._sent_at.get(order.client_order_id, self._started_at)
        deadline += self._unknown_window_s
        fill = await self._lookup(exchange, order)
        remaining = deadline - self._clock()
        if fill is not None or remaining <= 0:
            return fill
        logger.info(
            "order %s not on the exchange yet; asking again in %.1f s",
            order.client_order_id,
            remaining,
        )
        await self._sleep(remaining)
        return await self._lookup(exchange, order)

    async def _order_count(self, user_id: int) -> int:
        async with self._db.execute(
            "SELECT COUNT(*) FROM orders WHERE user_id = ?", (user_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row is not None else 0

    async def _resume_exit(self, exchange: Exchange, request: OrderRequest) -> Settlement | None:
        """Settle an earlier exit of this position whose outcome was left open."""
        assert request.position_id is not None
        for order in await order_store.orders_of_position(self._db, request.position_id):
            if order.side is not OrderSide.SELL:
                continue
            if order.status in OPEN_ORDER_STATUSES:
                fill = await self._resolve(exchange, order)
                if fill is not None:
                    return await self._settle(order, fill, request.exit_reason, request.stop_params)
                await order_store.mark_order_rejected(
                    self._db, order.client_order_id, NOT_PLACED_AFTER_RESTART, now=self._clock()
                )
            elif (
                order.status is OrderStatus.FILLED
                and not order.settled
                and order.fill_price is not None
            ):
                fill = _fill_from_order(order)
                return await self._settle(order, fill, request.exit_reason, request.stop_params)
        return None

    async def _resume_entry(
        self, exchange: Exchange, order: Order, request: OrderRequest
    ) -> Settlement:
        """The same keyed entry asked again (a redelivered command): settle it, never repeat it."""
        order = await self._latest(order)
        if order.status is OrderStatus.FILLED and order.fill_price is not None:
            return await self._settle(
                order, _fill_from_order(order), request.exit_reason, request.stop_params
            )
        if order.status in OPEN_ORDER_STATUSES:
            fill = await self._resolve(exchange, order)
            if fill is not None:
                return await self._settle(order, fill, request.exit_reason, request.stop_params)
            return await self._send_and_settle(exchange, order, request)
        if order.error in (NOT_PLACED_AFTER_RESTART, NOT_PLACED):
            raise TradingError(
                "a restart interrupted this order before it reached the exchange; "
                "nothing was bought, send the command again"
            )
        raise TradingError(f"this order was refused earlier: {order.error or 'no reason given'}")

    async def _send_and_settle(
        self, exchange: Exchange, order: Order, request: OrderRequest
    ) -> Settlement:
        for send in range(MAX_SENDS):
            await self._refuse_unless_may_act(order)
            self._sent_at[order.client_order_id] = self._clock()
            fill: Fill | None
            try:
                fill = await exchange.place_market_order(
                    order.symbol, order.side, order.quantity, order.client_order_id
                )
            except DuplicateOrder:
                fill = await self._duplicate_fill(exchange, order)
            except (OrderRefused, CredentialsRejected, RateLimited) as error:
                # Definite: the exchange did not place it. Never retried.
                await self._reject(order, str(error))
                raise
            except TradingError as error:
                await self._reject(order, error.message)
                raise
            except ExchangeError as error:
                logger.warning(
                    "order %s for user %d: outcome unknown (%s); asking the exchange",
                    order.client_order_id,
                    order.user_id,
                    error,
                )
                await self._mark_unknown(order, str(error))
                try:
                    fill = await self._resolve(exchange, order)
                except ExchangeError as lookup_error:
                    raise OrderOutcomeUnknown(
                        "the exchange did not confirm the order; it will be checked again "
                        "and never placed twice"
                    ) from lookup_error
                if fill is None:
                    await order_store.mark_order_rejected(
                        self._db, order.client_order_id, NOT_PLACED, now=self._clock()
                    )
                    self._sent_at.pop(order.client_order_id, None)
                    if send + 1 < MAX_SENDS:
                        order = await self._successor(order)
                        logger.info(
                            "order never reached the exchange; sending it again as %s",
                            order.client_order_id,
                        )
                        continue
                    raise OrderOutcomeUnknown(
                        "the exchange did not take the order; try again shortly"
                    ) from error
            if fill is None:  # pragma: no cover - every branch above assigns or raises
                raise AssertionError("no fill to settle")
            return await self._settle(order, fill, request.exit_reason, request.stop_params)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _refuse_unless_may_act(self, order: Order) -> None:
        """Refuse `order` before it is sent when this instance may not act (another one
        may hold the lease); a retry by the holder recognises nothing of this order."""
        if self._may_act is None:
            return
        try:
            self._may_act()
        except BlueprintError as error:
            await self._reject(order, error.message)
            raise TradingError(error.message) from None

    async def _duplicate_fill(self, exchange: Exchange, order: Order) -> Fill:
        """The fill of an order the exchange calls a duplicate: ours, sent before."""
        fill = await self._lookup(exchange, order)
        if fill is None:
            await self._reject(order, "the exchange reports a duplicate it cannot show")
            raise TradingError("the exchange refused a duplicate order") from None
        return fill

    async def _lookup(self, exchange: Exchange, order: Order) -> Fill | None:
        try:
            return await exchange.find_order(order.symbol, order.client_order_id)
        except OrderRefused as error:
            # The exchange ended it without a fill: it is settled as refused.
            await self._reject(order, str(error))
            raise

    async def _reject(self, order: Order, reason: str) -> None:
        self.failed += 1
        current = await order_store.get_order(self._db, order.client_order_id)
        if current is not None and current.status in OPEN_ORDER_STATUSES:
            await order_store.mark_order_rejected(
                self._db, order.client_order_id, reason or "refused", now=self._clock()
            )

    async def _mark_unknown(self, order: Order, reason: str) -> None:
        current = await order_store.get_order(self._db, order.client_order_id)
        if current is not None and current.status in (OrderStatus.PENDING, OrderStatus.SENT):
            await order_store.mark_order_unknown(
                self._db, order.client_order_id, reason or "no answer", now=self._clock()
            )

    async def _settle(
        self,
        order: Order,
        fill: Fill,
        exit_reason: str,
        stop_params: TrailingParams | None,
    ) -> Settlement:
        self.placed += 1
        self._sent_at.pop(order.client_order_id, None)
        base, quote = _split(order.symbol)
        fee_in_quote = _quote_fee(fill, base, quote)
        price = fill.average_price
        now = self._clock()
        exit_reason = order.exit_reason or exit_reason  # a recovery does not know it
        opened = closed = False
        async with transaction(self._db):
            current = await order_store.get_order(self._db, order.client_order_id)
            if current is None:
                raise TradingError(f"order {order.client_order_id} vanished")
            if current.status is not OrderStatus.FILLED:
                current = await order_store.mark_order_filled(
                    self._db,
                    order.client_order_id,
                    price,
                    fee_in_quote,
                    filled_quantity=fill.quantity,
                    exchange_order_id=fill.exchange_order_id or None,
                    fees=fill.fees_by_asset,
                    expired=fill.expired,
                    now=now,
                )
            if current.settled and current.position_id is not None:
                position = await store.get(self._db, current.position_id)
                if position is None:
                    raise TradingError(f"position {current.position_id} does not exist")
            elif order.side is OrderSide.BUY:
                position = await self._open_position(current, fill, base, quote)
                opened = True
            else:
                position, closed = await self._apply_exit(current, fill, exit_reason, now)
            await order_store.mark_order_settled(self._db, order.client_order_id)
        if opened:
            params = stop_params or await self._default_stop_params(order.user_id)
            state = initial_state(float(price), params, now)
            await self._stops.add(position.id, position.user_id, position.symbol, state)
        elif closed:
            await self._stops.remove(position.id)
        final = await order_store.get_order(self._db, order.client_order_id)
        return Settlement(final or current, fill, position, fee_in_quote)

    async def _open_position(self, order: Order, fill: Fill, base: str, quote: str) -> Position:
        """Open the position this buy bought (a settled buy never gets here: ``_settle``
        returns the position it opened).

        It holds what the account received: a commission in the base asset is taken
        from the bought quantity. Its cost is what was paid, quote commission included.
        """
        fees = fill.fees_by_asset
        quantity = fill.quantity - fees.get(base, Decimal(0))
        position = await store.open(
            self._db,
            order.user_id,
            order.symbol,
            quantity,
            fill.average_price,
            order.client_order_id,
            entry_cost=fill.quote_quantity + fees.get(quote, Decimal(0)),
            now=self._clock(),
        )
        await order_store.link_order_to_position(self._db, order.client_order_id, position.id)
        return position

    async def _apply_exit(
        self, order: Order, fill: Fill, reason: str, now: float
    ) -> tuple[Position, bool]:
        """Close the position, or reduce it when the exchange expired the exit part-filled;
        and whether it closed just now. A stop's exit queues its notice with it."""
        if order.position_id is None:
            raise TradingError(f"exit order {order.client_order_id} names no position")
        position = await store.get(self._db, order.position_id)
        if position is None:
            raise TradingError(f"position {order.position_id} does not exist")
        if position.status is PositionStatus.CLOSED:
            return position, False
        proceeds = fill.quote_quantity - _quote_fee(fill, *_split(order.symbol))
        if notices.told_of(reason):
            notice = notices.exit_notice(
                position, fill.quantity, fill.average_price, reason, order.client_order_id
            )
            await outbox.enqueue(self._db, [notice])  # in the caller's transaction
        if fill.expired and fill.quantity < position.quantity:
            logger.warning(
                "exit %s of position %d filled %s of %s before the exchange expired it; "
                "the rest stays open under its stop",
                order.client_order_id,
                position.id,
                fill.quantity,
                position.quantity,
            )
            reduced = await store.record_partial_exit(
                self._db, position.id, fill.quantity, proceeds
            )
            return reduced, False
        closed = await store.close(
            self._db,
            position.id,
            fill.average_price,
            reason,
            order.client_order_id,
            sold=fill.quantity,
            proceeds=proceeds,
            now=now,
        )
        return closed, True

    async def recover(
        self, exchange_for: ExchangeFor, *, skip_busy: bool = False
    ) -> RecoveryReport:
        """Resolve every unsettled order and every fill whose position change is missing.

        ``skip_busy`` leaves alone traders whose orders are being sent right now (the
        periodic check while running); at start-up nothing is in flight.
        """
        report = RecoveryReport()
        for order in await order_store.list_unsettled_orders(self._db):
            if skip_busy and self.lock_for(order.user_id).locked():
                continue
            async with self.lock_for(order.user_id):
                current = await order_store.get_order(self._db, order.client_order_id)
                if current is None or current.status not in OPEN_ORDER_STATUSES:
                    continue
                try:
                    exchange = await exchange_for(order.user_id)
                    fill = await self._resolve(exchange, current)
                except OrderRefused:
                    report.not_placed += 1
                    continue
                except (ExchangeError, TradingError) as error:
                    logger.warning(
                        "order %s of user %d still unresolved: %s",
                        order.client_order_id,
                        order.user_id,
                        error,
                    )
                    report.still_unknown += 1
                    continue
                if fill is None:
                    await order_store.mark_order_rejected(
                        self._db,
                        order.client_order_id,
                        NOT_PLACED_AFTER_RESTART,
                        now=self._clock(),
                    )
                    report.not_placed += 1
                    continue
                await self._settle(current, fill, ExitReason.MANUAL.value, None)
                report.settled += 1
        for order in await self._filled_without_effect():
            if skip_busy and self.lock_for(order.user_id).locked():
                continue
            async with self.lock_for(order.user_id):
                await self._settle(order, _fill_from_order(order), ExitReason.MANUAL.value, None)
                report.settled += 1
        if report.settled or report.not_placed or report.still_unknown:
            logger.info(
                "order recovery: %d settled, %d never placed, %d still unknown",
                report.settled,
                report.not_placed,
                report.still_unknown,
            )
        return report

    async def has_unsettled(self) -> bool:
        statuses = tuple(status.value for status in OPEN_ORDER_STATUSES)
        placeholders = ", ".join("?" for _ in statuses)
        async with self._db.execute(
            f"SELECT 1 FROM orders WHERE status IN ({placeholders}) LIMIT 1", statuses
        ) as cursor:
            return await cursor.fetchone() is not None

    async def _filled_without_effect(self) -> list[Order]:
        """Filled orders whose effect on their position was not written (a crash between)."""
        async with self._db.execute(
            "SELECT client_order_id FROM orders WHERE status = 'filled' AND settled = 0 "
            "ORDER BY created_at"
        ) as cursor:
            rows = await cursor.fetchall()
        found: list[Order] = []
        for row in rows:
            order = await order_store.get_order(self._db, row[0])
            if order is not None and order.fill_price is not None:
                found.append(order)
        return found


def _fill_from_order(order: Order) -> Fill:
    price = order.fill_price or Decimal(0)
    return Fill(
        client_order_id=order.client_order_id,
        exchange_order_id=order.exchange_order_id or "",
        symbol=order.symbol,
        side=order.side,
        quantity=order.quantity,
        quote_quantity=order.quantity * price,
        fee=Decimal(0),
        fee_asset=None,
        fees=dict(order.fees),
        expired=order.expired,
    )


__all__ = [
    "MAX_SENDS",
    "ExchangeUnavailable",
    "OrderOutcomeUnknown",
    "OrderPath",
    "OrderRequest",
    "PositionLeftAsDust",
    "RecoveryReport",
    "Settlement",
    "client_order_id",
]
