"""The deployment's identity: the id its database was given when it was created.

A deployment is its manifest `name` plus its database. Two homes under one name are one
deployment only when they share a database (the same volume mounted by a rolling
deploy, a restored backup); `lunara.instance` lets one of them run and makes the other
wait, and refuses a home whose database says it is another deployment.
"""

from __future__ import annotations

import aiosqlite

from lunara.storage.database import SchemaError
from lunara.storage.rows import fetch_one


async def deployment_id(db: aiosqlite.Connection) -> str:
    """The id migration 7 made for this database (32 hex digits)."""
    row = await fetch_one(db, "SELECT deployment_id FROM deployment WHERE singleton = 1")
    if row is None:
        raise SchemaError("the database has no deployment id (its deployment table is empty)")
    return str(row[0])
