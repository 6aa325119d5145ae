"""Who is asking: the principal a CLI call or a Telegram update acts as.

A token proves more than a login (a CI job runs as some OS user but should hold only
the `ci` role), so a matching `LUNARA_TOKEN` wins; without one the caller is the OS user
the process runs as. A token that matches no principal is refused: a credential that
fails never falls back to another identity (a mistyped CI token must not act with the
runner's OS user's role). Telegram users are named by their numeric id, which never changes,
unlike a username.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping

from blueprint.errors import PermissionDenied
from blueprint.manifest import Manifest, PrincipalKind

TOKEN_ENV = "LUNARA_TOKEN"
UNKNOWN_TOKEN_PRINCIPAL = "token:?"
"""How the audit log names a caller whose token matched no principal (no manifest
principal can have this name)."""


class UnknownToken(PermissionDenied):
    """A token was given and matches no token principal of the manifest (exit 4)."""


def principal_for(manifest: Manifest, token: str | None, uid: int | None = None) -> str:
    """`token:<name>` for a token the manifest knows, `os_user:<login>` of ``uid`` (default:
    the effective uid) when no token is given; ``UnknownToken`` for any other token."""
    if token:
        principal = manifest.principal_for_token(token)
        if principal is None:
            raise UnknownToken(
                f"{TOKEN_ENV} matches no token principal in the manifest; fix the token, "
                f"or unset {TOKEN_ENV} to act as your OS user"
            )
        return principal
    return os_user_principal(uid)


def cli_principal(manifest: Manifest, environ: Mapping[str, str]) -> str:
    """The principal of a CLI caller with this environment (see ``principal_for``)."""
    return principal_for(manifest, environ.get(TOKEN_ENV))


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
