"""A local stand-in for Binance's public data site (data.binance.vision).

It serves what a test puts in it under Binance's own paths: ``data/spot/monthly/klines/
{SYMBOL}/{INTERVAL}/{SYMBOL}-{INTERVAL}-{YYYY}-{MM}.zip`` and its ``.zip.CHECKSUM`` (a
line ``<sha256>  <file name>``, as Binance writes it), with 404 for anything else. It
answers ranges (``Range: bytes=N-`` gets 206 and the rest), as the real site's storage
does, logs every request, and can cut a file short: send half of it and then hold the
connection open until the test has ended the client (an interrupted run).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from dataclasses import dataclass

from aiohttp import web

from tests.fakes.http import BackgroundServer


@dataclass(frozen=True)
class Request:
    path: str
    range: str | None


def archive_path(symbol: str, interval: str, period: str) -> str:
    kind = "daily" if len(period) == 10 else "monthly"
    return f"data/spot/{kind}/klines/{symbol}/{interval}/{symbol}-{interval}-{period}.zip"


class PublicDataServer(BackgroundServer):
    name = "binance-public-data"

    def __init__(self) -> None:
        self._init_server()
        self.files: dict[str, bytes] = {}
        self.requests: list[Request] = []
        self.cut_short: set[str] = set()
        """Paths whose zip is sent half and then held open, once each."""
        self.half_sent = threading.Event()
        self._lock = threading.Lock()

    def publish(self, path: str, content: bytes, *, checksum_of: bytes | None = None) -> None:
        """Serve ``content`` at ``path`` with a checksum file beside it, of ``checksum_of``
        (the content itself unless a test wants a corrupted file)."""
        name = path.rsplit("/", 1)[1]
        digest = hashlib.sha256(content if checksum_of is None else checksum_of).hexdigest()
        self.files[path] = content
        self.files[path + ".CHECKSUM"] = f"{digest}  {name}\n".encode()

    def requested(self, path: str) -> list[Request]:
        with self._lock:
            return [request for request in self.requests if request.path == path]

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/{path:.*}", self._answer)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        with self._lock:
            self.requests.append(Request(path, request.headers.get("Range")))
        content = self.files.get(path)
        if content is None:
            return web.Response(status=404, text="<Error><Code>NoSuchKey</Code></Error>")
        start = 0
        wanted = request.headers.get("Range")
        if wanted and wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[len("bytes=") : -1])
            if start >= len(content):
                return web.Response(status=416)
        body = content[start:]
        response = web.StreamResponse(status=206 if start else 200)
        response.content_length = len(body)
        response.content_type = "application/zip"
        if start:
            response.headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
        await response.prepare(request)
        if path in self.cut_short:
            self.cut_short.discard(path)
            await response.write(body[: len(body) // 2])
            self.half_sent.set()
            await asyncio.Event().wait()  # held open: the client is ended meanwhile
        await response.write(body)
        await response.write_eof()
        return response
