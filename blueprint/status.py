"""`lunara status`: what runs, computed from the ledger and the process table.

One computation serves the CLI, the watchdog's status socket (blueprint.statusd) and
its health endpoint (blueprint.health), so none of them needs the controller and its
verbs. It must answer fast and truthfully: it reads the ledger and asks psutil which of
the recorded processes (pid *and* create time) are alive, and what to call the result
is the pure `decide_state` over those facts. It never says `running` for a dead bot
nor `stopped` for a live one, whatever the ledger claims.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil

from blueprint.clock import parse_iso
from blueprint.dependencies import dependency_notes, read_dependencies
from blueprint.errors import ExitCode
from blueprint.exit_message import is_invalid_config
from blueprint.heartbeat import STANDBY, heartbeat_mtime, heartbeat_services
from blueprint.process import CREATE_TIME_TOLERANCE_S, find_process, tree_rss_bytes
from blueprint.redaction import Redactor, secrets_in_environ
from blueprint.states import Liveness, State, decide_state
from blueprint.units import MIB

if TYPE_CHECKING:
    from blueprint.ledger import ExitRecord, Ledger, LedgerDocument
    from blueprint.manifest import Manifest
    from blueprint.mirror import Mirror
    from blueprint.paths import HomePaths


def redact(text: str, environ: Mapping[str, str]) -> str:
    """Blank out secrets before log lines go into an error message."""
    return Redactor(secrets_in_environ(environ)).redact(text)


@dataclass
class StatusReport:
    """`lunara status --json` (DESIGN.md): add fields, never rename them."""

    state: str
    pid: int | None
    supervisor_pid: int | None
    started_at: str | None
    uptime_s: float | None
    restarts: int
    last_exit: dict[str, Any] | None
    rss_mib: float | None
    heartbeat_age_s: float | None
    mirror: dict[str, Any]
    ledger_revision: int
    principal: str | None
    healthy: bool
    notes: list[str] = field(default_factory=list)
    # What the running bot last found of what it works with (blueprint.dependencies);
    # None when no bot of this run has said.
    dependencies: dict[str, dict[str, Any]] | None = None
    # An instance of this deployment waiting to take over from this one (blueprint.standby
    # in this home, or a bot of another home waiting for the instance lease); else None.
    standby: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "state": str(self.state),
            "pid": self.pid,
            "supervisor_pid": self.supervisor_pid,
            "started_at": self.started_at,
            "uptime_s": self.uptime_s,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "rss_mib": self.rss_mib,
            "heartbeat_age_s": self.heartbeat_age_s,
            "mirror": self.mirror,
            "ledger_revision": self.ledger_revision,
            "principal": self.principal,
            "healthy": self.healthy,
            "notes": list(self.notes),
            "dependencies": self.dependencies,
            "standby": self.standby,
        }

    def exit_code(self) -> ExitCode:
        """0 when running and healthy or waiting as standby, 3 when stopped; else 5.

        `starting` and `stopping` are 5 too: the bot is not yet (or no longer) known to
        work, and a CI script that wants to wait for health uses `start --wait`. A
        standby is an instance doing what it should while another one is active.
        """
        if self.state == State.RUNNING and self.healthy:
            return ExitCode.OK
        if self.state == State.STANDBY:
            return ExitCode.OK
        if self.state == State.STOPPED:
            return ExitCode.NOT_RUNNING
        return ExitCode.UNHEALTHY


def exit_json(record: ExitRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "code": record.code,
        "signal": record.signal,
        "at": record.at,
        "reason": record.reason,
        "rss_mib": record.rss_mib,
    }


def bot_started(doc: LedgerDocument, bot: psutil.Process) -> float:
    """When the bot started: the watchdog's wall clock, else the kernel's (coarser) record.

    psutil's create time is the boot time (whole seconds) plus ticks, so it can be up to
    a second early; the recorded start is exact unless it belongs to another process.
    """
    created = bot.create_time()
    recorded = parse_iso(doc.started_at)
    if recorded is not None and abs(recorded - created) <= CREATE_TIME_TOLERANCE_S:
        return recorded
    return created


def compute_status(
    paths: HomePaths,
    manifest: Manifest,
    ledger: Ledger,
    mirror: Mirror,
    principal: str | None = None,
) -> StatusReport:
    """The status of the deployment in `paths`, asked by `principal`."""
    read = ledger.read()
    return report_of(read.document, paths, manifest, mirror, principal, read.recovered)


def report_of(
    doc: LedgerDocument,
    paths: HomePaths,
    manifest: Manifest,
    mirror: Mirror,
    principal: str | None,
    recovered: str | None = None,
) -> StatusReport:
    """The status report for one ledger document as the process table finds it now."""
    now = time.time()
    watchdog = find_process(doc.watchdog)
    bot = find_process(doc.bot)
    uptime: float | None = None
    rss_mib: float | None = None
    age: float | None = None
    dependencies: dict[str, dict[str, Any]] | None = None
    if bot is not None:
        try:
            started = bot_started(doc, bot)
            uptime = max(0.0, now - started)
            rss_mib = round(tree_rss_bytes(bot) / MIB, 1)
        except psutil.Error:
            bot = None
        else:
            beat = heartbeat_mtime(paths.heartbeat)
            if beat is not None and beat >= started:
                age = max(0.0, now - beat)
            dependencies = read_dependencies(paths.dependencies, started)
    standby_of: str | None = None
    if age is not None:
        said = heartbeat_services(paths.heartbeat) or ""
        if said.startswith(f"{STANDBY}:"):
            standby_of = said.split(":", 1)[1].strip()
    facts = Liveness(
        watchdog_alive=watchdog is not None,
        bot_alive=bot is not None,
        heartbeat_age_s=age,
        bot_uptime_s=uptime,
        heartbeat_timeout_s=manifest.program.heartbeat_timeout_s,
        standby_of=standby_of,
    )
    last_exit = doc.last_exit
    invalid_config = last_exit is not None and is_invalid_config(last_exit.code, last_exit.signal)
    verdict = decide_state(str(doc.state), facts, invalid_config)
    notes = list(verdict.notes)
    if recovered:
        notes.insert(0, recovered)
    # A dependency that is down leaves `healthy` alone: a restart would not bring it back.
    notes.extend(dependency_notes(dependencies))
    standby = _waiting_standby(paths, mirror, verdict.state)
    if standby is not None:
        where = f", home {standby['home']}" if standby.get("home") else ""
        notes.append(
            f"standby waiting to take over: host {standby['host']}{where}, pid {standby['pid']}"
        )
    return StatusReport(
        state=str(verdict.state),
        pid=None if bot is None else bot.pid,
        supervisor_pid=None if watchdog is None else watchdog.pid,
        started_at=doc.started_at if bot is not None else None,
        uptime_s=None if uptime is None else round(uptime, 1),
        restarts=doc.restarts,
        last_exit=exit_json(doc.last_exit),
        rss_mib=rss_mib,
        heartbeat_age_s=None if age is None else round(age, 2),
        mirror=mirror.health(),
        ledger_revision=doc.revision,
        principal=principal,
        healthy=verdict.healthy,
        notes=notes,
        dependencies=dependencies,
        standby=standby,
    )


def _waiting_standby(paths: HomePaths, mirror: Mirror, state: State) -> dict[str, Any] | None:
    """Who waits to take over from this home's live instance, if it is the live one."""
    if state != State.RUNNING:
        return None
    from blueprint.standby import waiting_standby

    record = waiting_standby(paths)
    if record is not None:
        return {**record.to_json(), "home": str(paths.root)}
    waiting = mirror.waiting_instance()
    if waiting is not None and waiting.get("home") != str(paths.root):
        return waiting
    return None
