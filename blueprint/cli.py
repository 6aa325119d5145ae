"""The `lunara` entry point and the CLI's one error boundary.

The commands are a Typer app (`blueprint.commands`; the bot adds its own in
`lunara.cli`), each opening an authorized session (`blueprint.session`). Failures
surface as `BlueprintError`s and become a message and an exit code in exactly one
place, `run_guarded` (`blueprint.options`, below the commands so they never import this
entry point).

`lunara status` is the hot path — container HEALTHCHECKs and CI loops call it every
few seconds — so a plain `[--home X] [--manifest Y] status [--json] [--quiet]` is
answered without loading the control plane: the running watchdog is asked over its
private socket (`blueprint.statusd`), which computes the very same report, authorizes
and audits the request. When no watchdog answers, the status is computed locally by
the same `status_command` the Typer command runs. Anything else (other flags,
`--help`, typos) goes through Typer. This module imports nothing heavy on purpose.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from blueprint.errors import ExitCode
from blueprint.options import Options, run_guarded

if TYPE_CHECKING:
    import typer


def parse_plain_status(argv: Sequence[str]) -> tuple[Options, bool, bool] | None:
    """Recognise exactly `[--home X] [--manifest Y] status [--json] [--quiet|-q]`."""
    options = Options()
    index = 0
    while index < len(argv) and argv[index] in ("--home", "--manifest"):
        if index + 1 >= len(argv):
            return None
        value = Path(argv[index + 1])
        if argv[index] == "--home":
            if not value.is_dir():
                return None  # the full parser says what is wrong with it
            options.home = value
        else:
            options.manifest = value
        index += 2
    if index >= len(argv) or argv[index] != "status":
        return None
    flags = argv[index + 1 :]
    allowed = {"--json", "--quiet", "-q"}
    if any(flag not in allowed for flag in flags) or len(set(flags)) != len(flags):
        return None
    return options, "--json" in flags, "--quiet" in flags or "-q" in flags


def status_from_watchdog(options: Options, as_json: bool, quiet: bool) -> int | None:
    """Ask the running watchdog; None when it cannot answer (then compute locally)."""
    from blueprint.locations import control_socket, home_is_named, resolve_home, resolve_manifest
    from blueprint.statusclient import query_status

    home = resolve_home(options.home)
    manifest = resolve_manifest(str(options.manifest) if options.manifest else None).resolve()
    reply = query_status(
        control_socket(home),
        manifest,
        os.environ.get("LUNARA_TOKEN"),
        home_named=home_is_named(options.home),
    )
    if reply is None:
        return None
    report = reply.get("report")
    if not isinstance(report, dict):
        sys.stderr.write(f"lunara: {reply['message']}\n")
        return int(reply["exit_code"])
    from blueprint.render import print_status

    print_status(report, as_json, quiet)
    return int(reply["exit_code"])


def plain_status(options: Options, as_json: bool, quiet: bool) -> int:
    answered = status_from_watchdog(options, as_json, quiet)
    if answered is not None:
        return answered
    from blueprint.session import status_command

    return status_command(options, as_json, quiet)


def main(
    argv: Sequence[str] | None = None, load_app: Callable[[], typer.Typer] | None = None
) -> None:
    """Run the CLI. `load_app` lets the bot add its own commands (lunara.cli) to the
    control plane's app without blueprint ever importing the bot."""
    from blueprint.envfile import load_into_environment
    from blueprint.paths import use_private_umask

    use_private_umask()  # the home's files (audit, ledger, locks) are the owner's alone

    # .env first: the home, manifest, token and Redis of every command come from the same
    # place as the watchdog's and the bot's (environment, then .env, then defaults).
    def read_env_file() -> int:
        load_into_environment()
        return 0

    code = run_guarded(read_env_file)
    if code:
        sys.exit(code)
    arguments = list(argv if argv is not None else sys.argv[1:])
    plain = parse_plain_status(arguments)
    if plain is not None:
        options, as_json, quiet = plain
        sys.exit(run_guarded(lambda: plain_status(options, as_json, quiet)))
    if load_app is None:
        from blueprint.commands import app
    else:
        app = load_app()
    app(args=arguments, prog_name="lunara")


__all__ = ["ExitCode", "Options", "main", "run_guarded"]
