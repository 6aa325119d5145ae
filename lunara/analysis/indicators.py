"""Batch indicators over numpy arrays (backtests), matching TA-Lib's definitions.

Every function returns arrays as long as its input with NaN during the warm-up, and the
same lookbacks and seeding as TA-Lib: EMA seeded with the SMA of its first `period`
values; MACD's fast EMA seeded at the slow EMA's first index; Wilder smoothing for RSI
and ATR seeded with a plain average; Bollinger bands over the population deviation.

Speed without a compiler: an exponential recursion y[i] = d * y[i-1] + g * x[i] is
linear, so over a block of `BLOCK` values it is a small matrix product (BLAS) plus the
value carried in from the previous block. The carries obey the same kind of recursion
one level up (decay d ** BLOCK) and are solved the same way, so the only Python loop
runs over a few dozen values. A carry c enters its block as if the block's first input
were larger by c * d / g, so each output is one short sum of exact weights: as precise
as the plain loop, with no long powers that underflow or overflow. The rolling sums of
the bands are likewise a banded matrix product over overlapping chunks.

Work is done a segment at a time in small scratch buffers that stay in cache; only the
outputs are allocated at full length.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

BLOCK = 16  # values per block of the recursions: a 16x16 kernel keeps BLAS fast
BAND_BLOCK = 16  # outputs per chunk of the Bollinger rolling sums
REFERENCE_CHUNKS = 8  # band chunks that share one reference close (128 closes)
SEGMENT_BLOCKS = 8192  # blocks per segment of work (128 Ki values, 1 MiB of scratch)
_LOOP_BELOW = 64  # shorter runs are done by the plain loop
_NEGLIGIBLE = 1e-280  # weights below this are zeroed (no subnormals in BLAS)


def _as_floats(values: FloatArray) -> FloatArray:
    return np.ascontiguousarray(values, dtype=np.float64)


def _nan_array(count: int, warmup: int) -> FloatArray:
    out = np.empty(count)
    out[: min(warmup, count)] = np.nan
    return out


def _ema_decay(period: int) -> float:
    return 1.0 - 2.0 / (period + 1)


def _wilder_decay(period: int) -> float:
    return (period - 1) / period


def _blocks_for(count: int) -> tuple[int, int]:
    """How many whole blocks of `count` values the block kernel takes, and how many
    values they hold; the plain loop does the rest (all of a short run)."""
    blocks = count // BLOCK if count >= _LOOP_BELOW else 0
    return blocks, blocks * BLOCK


def _segments(blocks: int) -> range:
    return range(0, blocks, SEGMENT_BLOCKS)


def _segment_rows(blocks: int) -> Iterator[slice]:
    """The rows of each segment of a (blocks, BLOCK) array, in order."""
    return (slice(first, first + SEGMENT_BLOCKS) for first in _segments(blocks))


def _in_blocks(blocks: int, *arrays: FloatArray) -> tuple[FloatArray, ...]:
    """The first `blocks` whole blocks of each array as a (blocks, BLOCK) view: what is
    written to a view lands in its array."""
    return tuple(values[: blocks * BLOCK].reshape(blocks, BLOCK) for values in arrays)


def _scratch(blocks: int, width: int = BLOCK) -> FloatArray:
    """Working rows for the largest segment of `blocks` blocks."""
    return np.empty((min(blocks, SEGMENT_BLOCKS), width))


def _loop(values: FloatArray, decay: float, gain: float, start: float, out: FloatArray) -> float:
    previous = start
    for index, value in enumerate(values.tolist()):
        previous = decay * previous + gain * value
        out[index] = previous
    return previous


@functools.lru_cache(maxsize=64)
def _weights(decay: float, gain: float) -> tuple[FloatArray, FloatArray]:
    """The in-block kernel (block @ kernel: outputs from a zero start) and the weights
    with which a carried-in value shows in each output; read-only, shared."""
    steps = np.arange(BLOCK)
    lag = steps[None, :] - steps[:, None]  # output j minus input k
    kernel: FloatArray = np.where(lag >= 0, gain * decay ** np.maximum(lag, 0), 0.0)
    kernel[np.abs(kernel) < _NEGLIGIBLE] = 0.0
    carry_weights: FloatArray = np.power(decay, steps + 1.0, dtype=np.float64)
    carry_weights[carry_weights < _NEGLIGIBLE] = 0.0
    kernel.setflags(write=False)
    carry_weights.setflags(write=False)
    return kernel, carry_weights


class _Recursion:
    """y[i] = decay * y[i-1] + gain * x[i] over consecutive segments of blocks."""

    def __init__(self, decay: float, gain: float, start: float) -> None:
        self.kernel, self.carry_weights = _weights(decay, gain)
        self.fold = decay / gain
        self.value = start  # the value after the last block processed

    def carries(self, inputs: FloatArray) -> FloatArray:
        """The value entering each block of `inputs`; advances past them."""
        ends = inputs @ self.kernel[:, -1]
        carries = np.empty(len(inputs) + 1)
        carries[0] = self.value
        _recurrence(ends, float(self.carry_weights[-1]), 1.0, self.value, carries[1:])
        self.value = float(carries[-1])
        return carries[:-1]

    def run(self, inputs: FloatArray, out: FloatArray) -> None:
        """Outputs of (blocks, BLOCK) `inputs` into `out`; the inputs are overwritten."""
        carries = self.carries(inputs)
        inputs[:, 0] += carries * self.fold
        np.matmul(inputs, self.kernel, out=out)


def _recurrence(
    values: FloatArray, decay: float, gain: float, start: float, out: FloatArray
) -> None:
    """out[i] = decay * out[i-1] + gain * values[i], with out[-1] = start."""
    blocks, bulk = _blocks_for(len(values))
    recursion = _Recursion(decay, gain, start)
    if blocks:
        inputs, body = _in_blocks(blocks, values, out)
        scratch = _scratch(blocks)
        for part in _segment_rows(blocks):
            buffer = scratch[: len(inputs[part])]
            np.copyto(buffer, inputs[part])
            recursion.run(buffer, body[part])
    _loop(values[bulk:], decay, gain, recursion.value, out[bulk:])


def ema(close: FloatArray, period: int) -> FloatArray:
    """Exponential moving average, seeded with the SMA of the first `period` values."""
    close = _as_floats(close)
    out = _nan_array(len(close), period - 1)
    if len(close) >= period:
        decay = _ema_decay(period)
        seed = float(np.mean(close[:period]))
        out[period - 1] = seed
        _recurrence(close[period:], decay, 1.0 - decay, seed, out[period:])
    return out


def macd(
    close: FloatArray, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """MACD line, signal line and histogram, with TA-Lib's lookback (slow + signal - 2).

    As in TA-Lib both EMAs start at the slow EMA's first index (the fast one seeded
    with the SMA of the `fast` closes ending there). The line comes out of one matrix
    product per block, with the difference of the two kernels.
    """
    close = _as_floats(close)
    count = len(close)
    first = slow - 1
    lookback = first + signal - 1
    line = _nan_array(count, lookback)
    signal_line = _nan_array(count, lookback)
    histogram = _nan_array(count, lookback)
    if count <= lookback:
        return line, signal_line, histogram
    fast_decay, slow_decay, signal_decay = _ema_decay(fast), _ema_decay(slow), _ema_decay(signal)
    fast_seed = float(np.mean(close[first - fast + 1 : first + 1]))
    slow_seed = float(np.mean(close[:slow]))
    head = close[first + 1 : lookback + 1]  # the line before the signal's first value
    fast_head, slow_head = np.empty(len(head)), np.empty(len(head))
    fast_value = _loop(head, fast_decay, 1.0 - fast_decay, fast_seed, fast_head)
    slow_value = _loop(head, slow_decay, 1.0 - slow_decay, slow_seed, slow_head)
    raw_head = np.concatenate(([fast_seed - slow_seed], fast_head - slow_head))
    fast_ema = _Recursion(fast_decay, 1.0 - fast_decay, fast_value)
    slow_ema = _Recursion(slow_decay, 1.0 - slow_decay, slow_value)
    signal_ema = _Recursion(signal_decay, 1.0 - signal_decay, float(np.mean(raw_head)))
    line[lookback] = raw_head[-1]
    signal_line[lookback] = signal_ema.value
    start = lookback + 1
    blocks, bulk = _blocks_for(count - start)
    if blocks:
        inputs, lines, signals = _in_blocks(
            blocks, close[start:], line[start:], signal_line[start:]
        )
        kernel = fast_ema.kernel - slow_ema.kernel
        carry_weights = np.stack([fast_ema.carry_weights, -slow_ema.carry_weights])
        carried_scratch, line_scratch = _scratch(blocks, 2), _scratch(blocks)
        for part in _segment_rows(blocks):
            closes = inputs[part]
            length = len(closes)
            carried, raw = carried_scratch[:length], line_scratch[:length]
            carried[:, 0] = fast_ema.carries(closes)
            carried[:, 1] = slow_ema.carries(closes)
            np.matmul(closes, kernel, out=lines[part])
            np.matmul(carried, carry_weights, out=raw)
            lines[part] += raw
            np.copyto(raw, lines[part])
            signal_ema.run(raw, signals[part])
    tail = slice(start + bulk, count)
    rest = close[tail]
    fast_rest, slow_rest = np.empty(len(rest)), np.empty(len(rest))
    _loop(rest, fast_decay, 1.0 - fast_decay, fast_ema.value, fast_rest)
    _loop(rest, slow_decay, 1.0 - slow_decay, slow_ema.value, slow_rest)
    line[tail] = fast_rest - slow_rest
    _loop(line[tail], signal_decay, 1.0 - signal_decay, signal_ema.value, signal_line[tail])
    np.subtract(line[lookback:], signal_line[lookback:], out=histogram[lookback:])
    return line, signal_line, histogram


def rsi(close: FloatArray, period: int = 14) -> FloatArray:
    """Wilder's RSI; 0 where there was no move at all (as TA-Lib).

    RSI = 100 * average gain / average |change|: the denominator is one Wilder average
    of the absolute changes, which equals average gain + average loss.
    """
    close = _as_floats(close)
    count = len(close)
    out = _nan_array(count, period)
    if count <= period:
        return out
    decay = _wilder_decay(period)
    head = np.diff(close[: period + 1])
    gains = _Recursion(decay, 100.0 / period, 100.0 * float(np.mean(np.maximum(head, 0.0))))
    moves = _Recursion(decay, 1.0 / period, float(np.mean(np.abs(head))))
    out[period] = gains.value / moves.value if moves.value != 0 else 0.0
    current, previous = close[period + 1 :], close[period:-1]
    blocks, bulk = _blocks_for(len(current))
    if blocks:
        current_blocks, previous_blocks, body = _in_blocks(
            blocks, current, previous, out[period + 1 :]
        )
        change_scratch, gain_scratch, move_scratch = (_scratch(blocks) for _ in range(3))
        for part in _segment_rows(blocks):
            length = len(body[part])
            change, gain, move = (
                change_scratch[:length],
                gain_scratch[:length],
                move_scratch[:length],
            )
            np.subtract(current_blocks[part], previous_blocks[part], out=change)
            np.maximum(change, 0.0, out=gain)
            np.abs(change, out=change)
            gains.run(gain, body[part])
            moves.run(change, move)
            with np.errstate(invalid="ignore", divide="ignore"):
                np.divide(body[part], move, out=body[part])
            if not move.all():
                body[part][move == 0] = 0.0
    rest = current[bulk:] - previous[bulk:]
    gain_rest, move_rest = np.empty(len(rest)), np.empty(len(rest))
    _loop(np.maximum(rest, 0.0), decay, 100.0 / period, gains.value, gain_rest)
    _loop(np.abs(rest), decay, 1.0 / period, moves.value, move_rest)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[period + 1 + bulk :] = np.where(move_rest != 0, gain_rest / move_rest, 0.0)
    return out


def true_range(high: FloatArray, low: FloatArray, close: FloatArray) -> FloatArray:
    """TR from the second candle on (NaN at index 0: no previous close).

    max(high, previous close) - min(low, previous close) is the textbook
    max(high - low, |high - previous|, |low - previous|) for any candle with high >= low.
    """
    high, low, close = _as_floats(high), _as_floats(low), _as_floats(close)
    out = np.empty(len(close))
    if len(close):
        out[0] = np.nan
        np.maximum(high[1:], close[:-1], out=out[1:])
        out[1:] -= np.minimum(low[1:], close[:-1])
    return out


def atr(high: FloatArray, low: FloatArray, close: FloatArray, period: int = 14) -> FloatArray:
    """Wilder's average true range (candles must have high >= low)."""
    high, low, close = _as_floats(high), _as_floats(low), _as_floats(close)
    count = len(close)
    out = _nan_array(count, period)
    if count <= period:
        return out
    decay, gain = _wilder_decay(period), 1.0 / period
    head = true_range(high[: period + 1], low[: period + 1], close[: period + 1])
    smooth = _Recursion(decay, gain, float(np.mean(head[1:])))
    out[period] = smooth.value
    start = period + 1
    blocks, bulk = _blocks_for(count - start)
    if blocks:
        highs, lows, previous, body = _in_blocks(
            blocks, high[start:], low[start:], close[start - 1 :], out[start:]
        )
        range_scratch, low_scratch = _scratch(blocks), _scratch(blocks)
        for part in _segment_rows(blocks):
            length = len(body[part])
            ranges, floor = range_scratch[:length], low_scratch[:length]
            np.maximum(highs[part], previous[part], out=ranges)
            np.minimum(lows[part], previous[part], out=floor)
            ranges -= floor
            smooth.run(ranges, body[part])
    tail = start + bulk - 1
    rest = true_range(high[tail:], low[tail:], close[tail:])[1:]
    _loop(rest, decay, gain, smooth.value, out[start + bulk :])
    return out


def _shift_groups(rows: FloatArray, shifts: FloatArray) -> None:
    """Add shifts[g] to each group of REFERENCE_CHUNKS consecutive rows (in place);
    whole groups are shifted in one broadcast over long contiguous runs."""
    whole = len(rows) // REFERENCE_CHUNKS
    if whole:
        grouped = rows[: whole * REFERENCE_CHUNKS].reshape(whole, -1)
        grouped += shifts[:whole, None]
    if whole * REFERENCE_CHUNKS < len(rows):
        rows[whole * REFERENCE_CHUNKS :] += shifts[-1]


def _band_matrix(period: int) -> FloatArray:
    """Column j averages the `period` values of a chunk that end at j + period - 1."""
    rows = np.arange(BAND_BLOCK + period - 1)[:, None]
    columns = np.arange(BAND_BLOCK)[None, :]
    return ((rows >= columns) & (rows < columns + period)) / period


def bbands(
    close: FloatArray, period: int = 20, deviations: float = 2.0
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Upper, middle (SMA) and lower Bollinger bands over the population deviation.

    Closes are taken relative to a nearby close (one per REFERENCE_CHUNKS chunks) before
    squaring, so the variance does not cancel catastrophically at high prices or in
    quiet markets.
    """
    close = _as_floats(close)
    count = len(close)
    upper = _nan_array(count, period - 1)
    middle = _nan_array(count, period - 1)
    lower = _nan_array(count, period - 1)
    outputs = count - period + 1
    if outputs <= 0:
        return upper, middle, lower
    blocks = outputs // BAND_BLOCK
    bulk = blocks * BAND_BLOCK
    if blocks:
        width = BAND_BLOCK + period - 1
        averaging = _band_matrix(period)
        rows = min(blocks, SEGMENT_BLOCKS)
        chunk_scratch = np.empty((rows, width))
        square_scratch = np.empty((rows, BAND_BLOCK))
        all_chunks = np.lib.stride_tricks.sliding_window_view(close, width)[::BAND_BLOCK]
        for first in _segments(blocks):
            length = min(SEGMENT_BLOCKS, blocks - first)
            chunks = chunk_scratch[:length]
            np.copyto(chunks, all_chunks[first : first + length])
            references = chunks[::REFERENCE_CHUNKS, 0].copy()
            _shift_groups(chunks, -references)
            done = slice(
                period - 1 + first * BAND_BLOCK, period - 1 + (first + length) * BAND_BLOCK
            )
            shape = (length, BAND_BLOCK)
            offset = middle[done].reshape(shape)
            spread = upper[done].reshape(shape)
            np.matmul(chunks, averaging, out=offset)  # mean - reference
            np.square(chunks, out=chunks)
            np.matmul(chunks, averaging, out=spread)  # mean square about the reference
            squared_offset = np.square(offset, out=square_scratch[:length])
            spread -= squared_offset  # the variance
            np.maximum(spread, 0.0, out=spread)
            np.sqrt(spread, out=spread)
            spread *= deviations
            _shift_groups(offset, references)  # the mean
            np.subtract(offset, spread, out=lower[done].reshape(shape))
            spread += offset
    if bulk < outputs:
        windows = np.lib.stride_tricks.sliding_window_view(close[bulk:], period)
        mean = windows.mean(axis=1)
        deviation = np.sqrt(((windows - mean[:, None]) ** 2).mean(axis=1))
        rest = slice(period - 1 + bulk, count)
        middle[rest] = mean
        upper[rest] = mean + deviations * deviation
        lower[rest] = mean - deviations * deviation
    return upper, middle, lower
