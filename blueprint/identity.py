"""Who is asking: the principal a CLI call or a Telegram update acts as.

A token proves more than a login (a CI job runs as some OS user but should hold only
the `ci` role), so a matching `LUNARA_TOKEN` wins; otherwise the caller is the OS user
the process runs as. Telegram users are named by their numeric id, which never changes,
unlike a username.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping

from blueprint.manifest import Manifest, PrincipalKind

TOKEN_ENV = "LUNARA_TOKEN"


def cli_principal(manifest: Manifest, environ: Mapping[str, str]) -> str:
    """`token:<name>` when LUNARA_TOKEN matches a token principal, else `os_user:<login>`."""
    raw_token = environ.get(TOKEN_ENV)
    if raw_token:
        principal = manifest.principal_for_token(raw_token)
        if principal is not None:
            return principal
    return os_user_principal()


def os_user_principal(uid: int | None = None) -> str:
    """The OS user principal of `uid` (default: the effective uid).

    A uid without a passwd entry (common in containers run with `--user 1234`) is named
    by its number, so it can still be granted a role as `os_user:1234`.
    """
    effective = os.geteuid() if uid is None else uid
    try:
        login = pwd.getpwuid(effective).pw_name
    except KeyError:
        login = str(effective)
    return f"{PrincipalKind.OS_USER}:{login}"


def telegram_principal(user_id: int) -> str:
    """`telegram:<id>` for a Telegram user id; anything but a positive int is a bug upstream."""
    if isinstance(user_id, bool) or not isinstance(user_id, int) or user_id <= 0:
        raise ValueError(f"a Telegram user id must be a positive integer, not {user_id!r}")
    return f"{PrincipalKind.TELEGRAM}:{user_id}"
