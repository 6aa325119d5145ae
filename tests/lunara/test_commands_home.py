"""Every bot command acts on the one home the CLI resolved: `--home` wins over
`LUNARA_HOME`, for the files it reads and writes as for the bot it checks.

Two homes, each with its own database; the environment names one, `--home` the other.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lunara.crypto import KeyRing, generate_key
from lunara.keys import keyring_from_setting
from lunara.storage import credentials, users
from lunara.storage.credentials import Exchange
from lunara.storage.database import open_database
from tests.blueprint.cli_harness import Cli, manifest_document, write_manifest

ENTRY = (sys.executable, "-m", "lunara.cli")


class Homes:
    def __init__(self, root: Path) -> None:
        self.chosen = root / "chosen"  # named by --home
        self.other = root / "other"  # named by LUNARA_HOME
        for home in (self.chosen, self.other):
            home.mkdir(mode=0o700)
        self.key = generate_key()
        self.cli = Cli(self.chosen, write_manifest(root / "manifest.json", manifest_document()))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"LUNARA_HOME": str(self.other), "LUNARA_ENCRYPTION_KEY": self.key}
        return self.cli.run(*args, entry=ENTRY, extra_env=env)


async def _fill(path: Path, ring: KeyRing, *user_ids: int) -> None:
    connection = await open_database(path)
    for user_id in user_ids:
        await users.register(connection, user_id, None)
        await credentials.store(connection, ring, user_id, Exchange.BINANCE, "k" * 64, "s" * 64)
    await connection.close()


def _users(path: Path) -> list[int]:
    connection = sqlite3.connect(path)
    try:
        return [row[0] for row in connection.execute("SELECT telegram_id FROM users ORDER BY 1")]
    finally:
        connection.close()


@pytest.fixture
def homes(tmp_path: Path) -> Homes:
    built = Homes(tmp_path)
    ring = keyring_from_setting(built.key)
    asyncio.run(_fill(built.chosen / "lunara.db", ring, 1, 2))
    asyncio.run(_fill(built.other / "lunara.db", ring, 7))
    return built


def test_backup_copies_the_database_of_the_home_given_by_home(homes: Homes, tmp_path: Path) -> None:
    result = homes.run("backup", str(tmp_path / "copy.db"))
    assert result.returncode == 0, result.stderr
    assert _users(tmp_path / "copy.db") == [1, 2]


def test_restore_replaces_the_database_of_the_home_given_by_home_only(
    homes: Homes, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.db"
    assert homes.run("backup", str(copy)).returncode == 0
    asyncio.run(_fill(homes.chosen / "lunara.db", keyring_from_setting(homes.key), 3))
    result = homes.run("restore", str(copy))
    assert result.returncode == 0, result.stderr
    assert _users(homes.chosen / "lunara.db") == [1, 2]
    assert _users(homes.other / "lunara.db") == [7]  # the environment's home is untouched


def test_keys_rotate_reencrypts_the_database_of_the_home_given_by_home(homes: Homes) -> None:
    newer = generate_key()
    env = {"LUNARA_HOME": str(homes.other), "LUNARA_ENCRYPTION_KEY": f"{newer},{homes.key}"}
    result = homes.cli.run("keys", "rotate", entry=ENTRY, extra_env=env)
    assert result.returncode == 0, result.stderr
    assert "re-encrypted 2 secrets" in result.stdout


def test_config_show_reports_the_home_given_by_home(homes: Homes) -> None:
    result = homes.run("config", "show", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert Path(shown["LUNARA_HOME"]).resolve() == homes.chosen.resolve()
