"""Binance's public spot klines (data.binance.vision), fetched, verified and kept.

The layout is Binance's: ``{base}/data/spot/monthly/klines/{SYMBOL}/{INTERVAL}/
{SYMBOL}-{INTERVAL}-{YYYY}-{MM}.zip`` for a month that is over, and ``.../daily/klines/
.../{SYMBOL}-{INTERVAL}-{YYYY}-{MM}-{DD}.zip`` for the days of the current month up to
yesterday (today's file does not exist yet). A month that ended a few days ago may not be
published yet: its days are fetched instead. Each zip has a ``.zip.CHECKSUM`` beside it
(``<sha256>  <file name>``).

Every zip is kept under ``LUNARA_HOME/data/binance/`` in the same layout with its
checksum file, which is what makes a run resumable:

- a zip whose checksum file is there and matches is not fetched again;
- a zip is written to ``NAME.zip.part`` while it arrives; an interrupted run leaves the
  part, and the next run asks only for the rest (an HTTP range);
- a zip whose SHA-256 is not the one its checksum file gives is refused: the part is
  deleted and nothing of it is kept or stored;
- a file that does not exist (404: before the symbol was listed, or not yet published) is
  reported, never fatal.

The candles of every zip of the range are then merged into the store (``store``).
"""

from __future__ import annotations

import calendar
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import httpx
import pandas as pd
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from blueprint.units import MIB
from lunara.data.formats import DataFileError, read_candle_file
from lunara.data.store import CandleStore, MergeSummary

DEFAULT_BASE_URL = "https://data.binance.vision"
CACHE_FOLDER = "binance"
TIMEOUT_S = 30.0
ATTEMPTS = 3
_CHECKSUM = re.compile(r"^([0-9a-fA-F]{64})\s+\*?(\S+)\s*$")


class Outcome(StrEnum):
    FETCHED = "fetched"
    KEPT = "kept"
    """Already there and verified: not fetched again."""
    MISSING = "missing"
    """404: not listed yet, or not published yet."""
    REFUSED = "refused"
    """Its checksum did not match, or it held no klines: nothing of it is kept."""
    FAILED = "failed"
    """The server could not be reached, or answered something else than the file."""


Month = tuple[int, int]


@dataclass(frozen=True)
class Archive:
    """One zip of Binance's public data."""

    symbol: str
    interval: str
    period: str
    """YYYY-MM for a month's file, YYYY-MM-DD for a day's."""

    @property
    def daily(self) -> bool:
        return len(self.period) == 10

    @property
    def name(self) -> str:
        return f"{self.symbol}-{self.interval}-{self.period}.zip"

    @property
    def path(self) -> str:
        """Its path under the base URL (and, less the leading data/, under the cache)."""
        kind = "daily" if self.daily else "monthly"
        return "/".join(("data", "spot", kind, "klines", self.symbol, self.interval, self.name))


@dataclass(frozen=True)
class FileResult:
    archive: Archive
    outcome: Outcome
    reason: str = ""
    received: int = 0
    """Bytes fetched in this run."""


@dataclass
class SymbolSummary:
    symbol: str
    interval: str
    files: list[FileResult] = field(default_factory=list)
    stored: MergeSummary | None = None

    def of(self, outcome: Outcome) -> list[FileResult]:
        return [result for result in self.files if result.outcome is outcome]

    @property
    def received(self) -> int:
        return sum(result.received for result in self.files)

    @property
    def ok(self) -> bool:
        return not self.of(Outcome.REFUSED) and not self.of(Outcome.FAILED)


class Progress(Protocol):
    """What the command shows while files arrive (a rich bar, or nothing)."""

    def planned(self, files: int) -> None: ...

    def expecting(self, size: int) -> None: ...

    def received(self, size: int) -> None: ...

    def finished(self, result: FileResult) -> None: ...


class _Silent:
    def planned(self, files: int) -> None:
        pass

    def expecting(self, size: int) -> None:
        pass

    def received(self, size: int) -> None:
        pass

    def finished(self, result: FileResult) -> None:
        pass


def months(first: Month, last: Month) -> list[Month]:
    found: list[Month] = []
    year, month = first
    while (year, month) <= last:
        found.append((year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return found


def days_of(symbol: str, interval: str, month: Month, before: date) -> list[Archive]:
    """The daily files of ``month`` for the days before ``before``."""
    year, number = month
    last = calendar.monthrange(year, number)[1]
    return [
        Archive(symbol, interval, f"{year:04d}-{number:02d}-{day:02d}")
        for day in range(1, last + 1)
        if date(year, number, day) < before
    ]


def plan(symbol: str, interval: str, first: Month, last: Month, today: date) -> list[Archive]:
    """The files of the months from ``first`` to ``last``: a month's file for a month that
    is over, the days up to yesterday for the current month."""
    current = (today.year, today.month)
    archives: list[Archive] = []
    for month in months(first, last):
        if month < current:
            archives.append(Archive(symbol, interval, f"{month[0]:04d}-{month[1]:02d}"))
        elif month == current:
            archives.extend(days_of(symbol, interval, month, today))
    return archives


def _previous(month: Month) -> Month:
    year, number = month
    return (year - 1, 12) if number == 1 else (year, number - 1)


class StartOver(Exception):
    """The part a former run left is longer than the file (416): fetch it whole."""


def _transient(error: BaseException) -> bool:
    if isinstance(error, StartOver):
        return True
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code >= 500
    return isinstance(error, httpx.TransportError)


class NotFound(Exception):
    """The server has no such file (404)."""


class PublicData:
    """A client of Binance's public data that keeps what it fetched under ``cache``."""

    def __init__(
        self,
        base_url: str,
        cache: Path,
        *,
        client: httpx.Client | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.cache = cache
        self._client = client or httpx.Client(timeout=TIMEOUT_S, follow_redirects=True)
        self._progress = progress or _Silent()

    def close(self) -> None:
        self._client.close()

    def local(self, archive: Archive) -> Path:
        return self.cache / archive.path.removeprefix("data/")

    def verified(self, archive: Archive) -> bool:
        """Whether the zip is there with its checksum file, and they agree."""
        zipped = self.local(archive)
        checksum = zipped.with_name(zipped.name + ".CHECKSUM")
        if not zipped.is_file() or not checksum.is_file():
            return False
        parsed = _CHECKSUM.match(checksum.read_text(errors="replace").strip())
        return parsed is not None and _sha256(zipped) == parsed.group(1).lower()

    def fetch_all(self, archives: Iterable[Archive], today: date) -> list[FileResult]:
        """Fetch ``archives`` in order; a month not published yet (the one just over) is
        replaced by its days."""
        queue = list(archives)
        self._progress.planned(len(queue))
        results: list[FileResult] = []
        current = (today.year, today.month)
        while queue:
            archive = queue.pop(0)
            result = self.fetch(archive)
            if result.outcome is Outcome.MISSING and not archive.daily:
                year, month = (int(part) for part in archive.period.split("-"))
                if (year, month) == _previous(current):
                    days = days_of(archive.symbol, archive.interval, (year, month), today)
                    queue = days + queue
                    self._progress.planned(len(days))
                    result = FileResult(
                        archive, Outcome.MISSING, "not published yet: its days are fetched"
                    )
            results.append(result)
            self._progress.finished(result)
        return results

    def fetch(self, archive: Archive) -> FileResult:
        if self.verified(archive):
            return FileResult(archive, Outcome.KEPT)
        url = f"{self.base_url}/{archive.path}"
        try:
            expected = self._checksum(url + ".CHECKSUM", archive)
            if expected is None:
                return FileResult(archive, Outcome.REFUSED, "its .CHECKSUM file is not a checksum")
            received = self._download(url, archive)
        except NotFound:
            return FileResult(archive, Outcome.MISSING, "not found (404)")
        except httpx.HTTPStatusError as error:
            status = error.response.status_code
            return FileResult(archive, Outcome.FAILED, f"the server answered {status}")
        except (httpx.HTTPError, StartOver) as error:
            return FileResult(archive, Outcome.FAILED, f"{type(error).__name__}: {error}")
        part = self._part(archive)
        actual = _sha256(part)
        if actual != expected:
            part.unlink()
            return FileResult(
                archive,
                Outcome.REFUSED,
                f"checksum mismatch (expected {expected[:12]}..., got {actual[:12]}...): not kept",
                received,
            )
        zipped = self.local(archive)
        part.replace(zipped)
        zipped.with_name(zipped.name + ".CHECKSUM").write_text(f"{expected}  {archive.name}\n")
        return FileResult(archive, Outcome.FETCHED, received=received)

    def _part(self, archive: Archive) -> Path:
        zipped = self.local(archive)
        return zipped.with_name(zipped.name + ".part")

    @retry(
        retry=retry_if_exception(_transient),
        stop=stop_after_attempt(ATTEMPTS),
        wait=wait_exponential(multiplier=0.5, max=4),
        reraise=True,
    )
    def _checksum(self, url: str, archive: Archive) -> str | None:
        response = self._client.get(url)
        if response.status_code == 404:
            raise NotFound(url)
        response.raise_for_status()
        parsed = _CHECKSUM.match(response.text.strip())
        if parsed is None or parsed.group(2) != archive.name:
            return None
        return parsed.group(1).lower()

    @retry(
        retry=retry_if_exception(_transient),
        stop=stop_after_attempt(ATTEMPTS),
        wait=wait_exponential(multiplier=0.5, max=4),
        reraise=True,
    )
    def _download(self, url: str, archive: Archive) -> int:
        """Fetch the zip into its part file, going on from what a former run left."""
        part = self._part(archive)
        part.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        received = 0
        with self._client.stream("GET", url, headers=headers) as response:
            if response.status_code == 404:
                raise NotFound(url)
            if response.status_code == 416:
                part.unlink()
                raise StartOver(url)
            response.raise_for_status()
            resumed = response.status_code == 206
            length = response.headers.get("content-length")
            if length is not None and length.isdigit():
                self._progress.expecting(int(length))
            with part.open("ab" if resumed else "wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
                    received += len(chunk)
                    self._progress.received(len(chunk))
        return received


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def download(
    client: PublicData,
    store: CandleStore,
    symbols: Iterable[str],
    interval: str,
    first: Month,
    last: Month,
    today: date,
    on_symbol: Callable[[SymbolSummary], None] | None = None,
) -> list[SymbolSummary]:
    """Fetch every symbol's files of the range, then merge their candles into the store."""
    summaries: list[SymbolSummary] = []
    for symbol in symbols:
        summary = SymbolSummary(symbol, interval)
        summary.files = client.fetch_all(plan(symbol, interval, first, last, today), today)
        summary.stored = _store(client, store, summary)
        summaries.append(summary)
        if on_symbol is not None:
            on_symbol(summary)
    return summaries


def _store(client: PublicData, store: CandleStore, summary: SymbolSummary) -> MergeSummary | None:
    """Merge the candles of every verified zip of the range (those fetched before an
    interruption too); a zip that holds no klines is refused and deleted."""
    frames: list[pd.DataFrame] = []
    for index, result in enumerate(summary.files):
        if result.outcome not in (Outcome.FETCHED, Outcome.KEPT):
            continue
        zipped = client.local(result.archive)
        try:
            frames.append(read_candle_file(zipped).frame)
        except DataFileError as error:
            zipped.unlink(missing_ok=True)
            zipped.with_name(zipped.name + ".CHECKSUM").unlink(missing_ok=True)
            summary.files[index] = FileResult(
                result.archive, Outcome.REFUSED, f"not klines ({error}): not kept", result.received
            )
    if not frames:
        return None
    return store.merge(summary.symbol, summary.interval, pd.concat(frames, ignore_index=True))
