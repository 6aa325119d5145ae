"""The `lunara` commands as a Typer app: argument parsing and output, nothing else.

Each command runs through `guarded`: it opens an authorized session
(`blueprint.session.open_session`) for the command's `Permission`, calls the library,
audits the outcome and prints. Errors reach `blueprint.options.run_guarded`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from blueprint.errors import BlueprintError
from blueprint.manifest import Permission
from blueprint.options import Options, run_guarded
from blueprint.session import (
    Session,
    active_manifest_path,
    acts_for_another_user,
    open_session,
    perform_remotely,
)
from blueprint.session import status_command as run_status

if TYPE_CHECKING:
    from blueprint.control import ActionResult

app = typer.Typer(
    name="lunara",
    help="Lunara's Bot OS: start, stop and inspect the trading bot under its watchdog.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
manifest_app = typer.Typer(
    help="Inspect and validate the role-based manifest.", no_args_is_help=True
)
app.add_typer(manifest_app, name="manifest")


def finite_seconds(value: float | None) -> float | None:
    """A duration option's check: click's range check lets `nan` through, and `inf`
    would be a wait that never ends (or a traceback where it meets a clock)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter("must be a finite number of seconds")
    return value


def seconds_option(flag: str, help_text: str) -> Any:
    """A duration option: no negative, `nan` or `inf` seconds."""
    return typer.Option(flag, min=0, callback=finite_seconds, help=help_text)


def wait_option(whose: str) -> Any:
    """`--wait` of the commands that start a bot, which waits for `whose` first beat."""
    return seconds_option(
        "--wait",
        f"Block until {whose} first heartbeat; exit 6 when it refuses its configuration, "
        "7 on timeout or early death.",
    )


JsonOption = Annotated[
    bool, typer.Option("--json", help="Machine-readable output (stable schema).")
]


def options_of(ctx: typer.Context) -> Options:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Options) else Options()


def finish(action: Callable[[], int]) -> None:
    """Run a command body behind the error boundary and exit with its code."""
    code = run_guarded(action)
    if code:
        raise typer.Exit(code)


def guarded(
    ctx: typer.Context,
    permission: Permission,
    action: str,
    body: Callable[[Session], int],
    *,
    remotely: Callable[[Options], int] | None = None,
) -> None:
    """Run `body` as the command `action`: authorize `permission` (audited) first, hand
    `body` the session, and exit with its code; a refusal or any expected failure
    becomes a one-line message and its exit code, never a traceback.

    With `remotely`, a caller whose home belongs to another OS user has the command
    run by that deployment's watchdog instead, which decides (and audits) it.
    """

    def run() -> int:
        options = options_of(ctx)
        if remotely is not None and acts_for_another_user(options):
            return remotely(options)
        return body(open_session(options, permission, action))

    finish(run)


@app.callback()
def main_options(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            exists=True,
            file_okay=False,
            readable=False,  # a control group member may only pass through it
            help="State directory, which must exist (default: $LUNARA_HOME or ./.lunara).",
        ),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest", help="Manifest file (default: $LUNARA_MANIFEST or ./manifest.json)."
        ),
    ] = None,
) -> None:
    """Lunara's Bot OS."""
    ctx.obj = Options(home=home, manifest=manifest)


def report_action(session: Session, result: ActionResult, as_json: bool, action: str) -> int:
    session.outcome("ok" if result.changed else "unchanged", {"message": result.message})
    if as_json:
        from blueprint.render import print_json

        print_json(
            {
                "action": action,
                "changed": result.changed,
                "message": result.message,
                "status": result.status.to_json(),
            }
        )
    else:
        typer.echo(result.message)
    return 0


def lifecycle(
    ctx: typer.Context,
    permission: Permission,
    action: str,
    call: Callable[[Session], ActionResult],
    as_json: bool,
    *,
    remotely: Callable[[Options], int] | None = None,
) -> None:
    """start/stop/restart: authorize, act, audit the outcome (failures too), report."""

    def body(session: Session) -> int:
        try:
            result = call(session)
        except BlueprintError as error:
            # The first line only: later lines may quote the bot's log.
            session.outcome("failed", {"error": error.message.splitlines()[0][:300]})
            raise
        return report_action(session, result, as_json, action)

    guarded(ctx, permission, action, body, remotely=remotely)


@app.command()
def start(
    ctx: typer.Context,
    wait: Annotated[float | None, wait_option("the bot's")] = None,
    as_json: JsonOption = False,
) -> None:
    """Start the watchdog and the bot (does nothing if already running).

    Without --wait it returns once the bot is spawned and says `starting`: whether it
    comes up is not known yet (`lunara status` tells).
    """
    lifecycle(
        ctx, Permission.START, "start", lambda s: s.controller.start(s.principal, wait), as_json
    )


@app.command()
def stop(
    ctx: typer.Context,
    timeout: Annotated[
        float | None,
        seconds_option("--timeout", "Seconds to wait for a graceful stop (default: manifest)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Stop the bot and its watchdog gracefully (does nothing if not running)."""
    lifecycle(
        ctx,
        Permission.STOP,
        "stop",
        lambda s: s.controller.stop(s.principal, timeout),
        as_json,
        remotely=lambda options: stop_remotely(options, timeout, as_json),
    )


def stop_remotely(options: Options, timeout: float | None, as_json: bool) -> int:
    """`stop` by a member of the control group: the watchdog stops itself; we wait for
    its socket to go, which it removes last."""
    import time

    from blueprint.errors import StartFailed
    from blueprint.locations import control_socket, resolve_home

    perform_remotely(options, "stop", {})
    socket_path = control_socket(resolve_home(options.home))
    deadline = time.monotonic() + (timeout if timeout is not None else 60.0) + 5.0
    while socket_path.exists():
        if time.monotonic() > deadline:
            raise StartFailed(f"the watchdog did not stop in time ({socket_path} remains)")
        time.sleep(0.1)
    if as_json:
        from blueprint.render import print_json

        print_json({"action": "stop", "changed": True, "message": "stopped", "status": None})
    else:
        typer.echo("stopped")
    return 0


@app.command()
def restart(
    ctx: typer.Context,
    wait: Annotated[float | None, wait_option("the new bot's")] = None,
    as_json: JsonOption = False,
) -> None:
    """Stop, then start."""
    lifecycle(
        ctx,
        Permission.RESTART,
        "restart",
        lambda s: s.controller.restart(s.principal, wait),
        as_json,
    )


@app.command()
def status(
    ctx: typer.Context,
    as_json: JsonOption = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print nothing; exit code only.")
    ] = False,
) -> None:
    """Show the state of the watchdog and the bot (exit 0 healthy, 3 stopped, 5 unhealthy)."""
    finish(lambda: run_status(options_of(ctx), as_json, quiet))


class LogSource(StrEnum):
    ALL = "all"
    BOT = "bot"
    WATCHDOG = "watchdog"


@app.command()
def logs(
    ctx: typer.Context,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=0, help="How many lines to show.")
    ] = 50,
    source: Annotated[
        LogSource,
        typer.Option(
            "--source",
            case_sensitive=False,
            help="all: the bot's log and the watchdog's events (restarts, crash reasons, "
            "memory and heartbeat kills) in time order; bot or watchdog: one of them.",
        ),
    ] = LogSource.ALL,
) -> None:
    """Show the bot's log and the watchdog's events, interleaved in time order."""

    def body(session: Session) -> int:
        from blueprint.logtail import follow_many, interleave, last_lines

        chosen = {
            LogSource.ALL: [session.paths.bot_log, session.paths.watchdog_log],
            LogSource.BOT: [session.paths.bot_log],
            LogSource.WATCHDOG: [session.paths.watchdog_log],
        }[source]
        session.outcome("ok")
        if not follow:
            present = [path for path in chosen if path.exists()]
            if not present:
                typer.echo(f"no log yet at {' or '.join(map(str, chosen))}", err=True)
                return 0
            shown = interleave([last_lines(path, lines) for path in present])
            for line in shown[-lines:] if lines else []:
                typer.echo(line)
            return 0
        for line in follow_many(chosen, start_lines=lines):
            typer.echo(line)
        return 0

    guarded(
        ctx,
        Permission.LOGS,
        "logs",
        body,
        remotely=lambda options: logs_remotely(options, follow, lines, source),
    )


def logs_remotely(options: Options, follow: bool, lines: int, source: LogSource) -> int:
    """`logs` by a member of the control group: the watchdog reads the logs for us."""
    if follow:
        raise BlueprintError("--follow needs the home's owner; show --lines instead")
    reply = perform_remotely(options, "logs", {"lines": lines, "source": str(source.value)})
    for line in reply.get("lines") or []:
        typer.echo(line)
    return 0


@app.command()
def run(ctx: typer.Context) -> None:
    """Supervise the bot in the foreground (containers, PID 1, systemd Type=simple)."""

    def body(session: Session) -> int:
        try:
            from blueprint.watchdog import Watchdog

            code = session.controller.run_foreground(session.principal, Watchdog)
        except BlueprintError as error:  # a bad health port, a bot refusing its configuration
            session.outcome("failed", {"error": error.message.splitlines()[0][:300]})
            raise
        session.outcome("exited", {"code": code})
        return code

    guarded(ctx, Permission.RUN, "run", body)


@app.command()
def audit(
    ctx: typer.Context,
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, help="How many entries.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Who did what, allowed or denied."""

    def body(session: Session) -> int:
        entries = session.audit.tail(lines)
        session.outcome("ok")
        return show_audit(entries, as_json)

    guarded(
        ctx,
        Permission.AUDIT,
        "audit",
        body,
        remotely=lambda options: show_audit(
            perform_remotely(options, "audit", {"lines": lines})["entries"], as_json
        ),
    )


def show_audit(entries: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        from blueprint.render import print_json

        print_json(entries)
        return 0
    from blueprint.render import print_records

    print_records("audit", ["at", "principal", "action", "decision", "outcome"], entries)
    return 0


@manifest_app.command("check")
def manifest_check(
    ctx: typer.Context,
    path: Annotated[
        Path | None, typer.Argument(help="Manifest to check (default: the active one).")
    ] = None,
) -> None:
    """Validate a manifest and name every bad field (exit 6 when invalid).

    It needs no permission: it reads only the file it is given and changes nothing,
    and it has to work precisely when the active manifest is broken.
    """

    def body() -> int:
        from blueprint.manifest import load_manifest

        target = path or active_manifest_path(options_of(ctx))
        manifest = load_manifest(target)
        typer.echo(
            f"{target}: valid ({len(manifest.roles)} roles, {len(manifest.principals)} "
            f"principals, program: {' '.join(manifest.program.command)})"
        )
        return 0

    finish(body)
