"""The `lunara` console script: blueprint's CLI with the bot's commands added.

This module stays light on purpose: a plain `lunara status` never loads Typer or the
bot; the bot's commands (`lunara.commands`) load only when another command runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer


def _load_app() -> typer.Typer:
    import lunara.commands  # noqa: F401  (loading it adds the bot's commands to blueprint's app)
    from blueprint.commands import app

    return app


def main(argv: Sequence[str] | None = None) -> None:
    from blueprint.cli import main as run

    run(argv, load_app=_load_app)


if __name__ == "__main__":
    main()
