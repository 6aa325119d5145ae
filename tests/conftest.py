"""Shared fixtures: a private Redis (started by scripts/with-redis.sh) and scratch homes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests prove behaviour, not speed (the benchmarks in bench/ measure that): no
# per-example deadline, which a loaded 2-core machine can miss on any of them.
settings.register_profile("lunara", deadline=None)
settings.load_profile("lunara")

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
# python-telegram-bot's durations as datetime.timedelta, the type its next major version
# gives: the bot opts in on import of lunara.telegram; tests that drive the library
# without the bot (the fake Bot API's own tests) opt in the same way.
os.environ.setdefault("PTB_TIMEDELTA", "true")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the private redis-server the test command started for this run."""
    url = os.environ.get("LUNARA_TEST_REDIS_URL")
    if not url:
        pytest.fail(
            "LUNARA_TEST_REDIS_URL is not set: run the suite with `make test` "
            "(scripts/with-redis.sh starts a private redis-server)"
        )
    return url


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[str]:
    """A Redis URL whose database is empty before and after the test.

    Each pytest-xdist worker has a database number of its own (gw0 the 1st, gw1 the
    2nd, ...; a run without workers the 0th), so workers need not wait for each other.
    Test processes that would still share one (several runs against one server) take
    turns instead of flushing each other's data.
    """
    import redis
    from filelock import FileLock

    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw"):
        redis_url = f"{redis_url.rsplit('/', 1)[0]}/{1 + int(worker[2:]) % 15}"
    digest = hashlib.sha256(redis_url.encode()).hexdigest()[:16]
    with FileLock(Path(tempfile.gettempdir()) / f"lunara-test-redis-{digest}.lock"):
        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        yield redis_url
        client.flushdb()
        client.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty LUNARA_HOME for one test."""
    path = tmp_path / "home"
    path.mkdir(mode=0o700)
    return path
