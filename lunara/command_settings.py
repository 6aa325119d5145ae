"""The bot's settings as a CLI command sees them: one place, shared by every command module."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from blueprint.session import Session
    from lunara.config import Settings


def settings_of(session: Session) -> Settings:
    """The bot's settings for the home this command resolved (``--home`` wins over
    ``LUNARA_HOME``), so a command reads and writes the very home whose bot it checked."""
    from lunara.config import load_settings

    return load_settings({**os.environ, "LUNARA_HOME": str(session.paths.root)})
