"""The `.env` file: one reader and one precedence for the CLI, the watchdog and the bot.

Precedence, the same everywhere: the process environment, then `.env` in the working
directory, then the defaults. A blank value counts as unset, so a `.env` copied from
`.env.example` with blank lines means "use the default". The CLI merges `.env` into its
own environment at start (`load_into_environment`), so the home, the manifest, the token
and Redis it uses are the ones the watchdog and the bot it starts use; the bot reads
the same file with the same rule (`lunara.config.load_settings`).
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path

from blueprint.errors import ConfigError

DEFAULT_ENV_FILE = Path(".env")
PROJECT_PREFIXES = ("LUNARA_", "TELEGRAM_", "BINANCE_", "GEMINI_", "LOG_")
PROJECT_VARIABLES = frozenset({"REDIS_URL", "PORT"})
"""What `.env` may set in the control plane's environment: the project's own variables,
never the interpreter's or the shell's (PYTHONPATH, PATH, LD_PRELOAD, ...)."""


TOKEN_VARIABLE = "LUNARA_TOKEN"
SYSTEM_VARIABLES = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
        "SSL_CERT_FILE", "SSL_CERT_DIR",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
        "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    }
)  # fmt: skip
"""What any program needs from the system it runs on (locale, time zone, where to find
programs and certificates, the host's proxy), passed to the watchdog and the bot."""
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_variable_name(text: str) -> bool:
    return _VARIABLE_NAME.fullmatch(text) is not None


def deployment_environment(
    environ: Mapping[str, str], allowed: Iterable[str] = ()
) -> dict[str, str]:
    """The environment the watchdog and the bot run with: the deployment's configuration,
    not whatever the shell or CI job that typed `start` happened to hold.

    Passed: the project's variables (`.env` is merged into them first, so its values are
    here), the system's basics (`SYSTEM_VARIABLES`, `LC_*`) and the names the manifest
    lists in `program.environment`. Never passed: `LUNARA_TOKEN` (it is the caller's
    credential, and a child's environment is readable in `/proc/PID/environ`), and
    everything else (`PYTHONPATH`, `LD_PRELOAD`, a CI runner's variables, ...).
    """
    extra = frozenset(allowed)
    return {
        name: value
        for name, value in environ.items()
        if name != TOKEN_VARIABLE
        and (
            is_project_variable(name)
            or name in SYSTEM_VARIABLES
            or name.startswith("LC_")
            or name in extra
        )
    }


def read_env_file(path: Path | None) -> dict[str, str]:
    """The variables set in a .env file; a missing file is simply empty.

    One that exists but cannot be read (another owner's 0600 file, a directory that a
    bind mount of a missing file left behind, a FIFO or a device, text that is not UTF-8)
    is a configuration error naming the file and the fix: never silently skipped, never
    a wait for a writer that may never come, never a traceback.
    """
    if path is None:
        return {}
    path = path.absolute()  # errors name the very file, whatever the working directory
    try:
        text = _read_trusted(path)
    except FileNotFoundError:
        return {}
    except PermissionError:
        raise ConfigError(_unreadable_env_file(path)) from None
    except OSError as error:
        raise ConfigError(_cannot_read(path, str(error.strerror or error))) from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"invalid configuration: {path} is not UTF-8 text (byte {error.start}): "
            "save it as UTF-8"
        ) from None
    from dotenv import dotenv_values

    values = dotenv_values(stream=io.StringIO(text))
    return {key: value for key, value in values.items() if value is not None}


def _read_trusted(path: Path) -> str:
    """The file's text, once it is known to be a regular file that only the caller or
    root could have written (it sets the token, Redis and endpoints of whoever runs
    Lunara here).

    O_NONBLOCK: opening a FIFO for reading would wait for a writer forever. The type is
    checked on the open descriptor (nothing can be swapped in between), before anything
    is read: a device such as /dev/zero never ends.
    """
    from blueprint.trust import check_owner_and_mode, check_parents

    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):  # before fdopen, which refuses a directory itself
            raise ConfigError(_cannot_read(path, _file_kind(info.st_mode)))
        os.set_blocking(descriptor, True)
        handle = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    with handle:
        check_owner_and_mode(info, path, "invalid configuration: .env file")
        check_parents(path, "invalid configuration: .env file")
        return handle.read().decode("utf-8")


def _file_kind(mode: int) -> str:
    """What a path that is not a regular file is, in the words of `ls -l` and strerror."""
    if stat.S_ISDIR(mode):
        return os.strerror(errno.EISDIR)
    for test, kind in (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return f"{kind}, not a regular file"
    return "not a regular file"


def _cannot_read(path: Path, why: str) -> str:
    return (
        f"invalid configuration: cannot read {path} ({why}): "
        "it must be a file of VARIABLE=value lines, or absent"
    )


def _unreadable_env_file(path: Path) -> str:
    import pwd

    uid = os.geteuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return (
        f"invalid configuration: cannot read {path}: permission denied for user {user} "
        f"(uid {uid}), who runs Lunara here; give the file to that user "
        f"(`chown {user}: {path} && chmod 600 {path}`), or move it out of the working "
        "directory and pass the variables in the environment (systemd EnvironmentFile=, "
        "docker --env-file)"
    )


def is_project_variable(name: str) -> bool:
    return name in PROJECT_VARIABLES or name.startswith(PROJECT_PREFIXES)


def load_into_environment(
    path: Path | None = DEFAULT_ENV_FILE, environ: MutableMapping[str, str] | None = None
) -> list[str]:
    """Set what `.env` gives for the project's variables the environment leaves unset (or
    blank); returns their names. Never overrides a value the environment holds."""
    target = os.environ if environ is None else environ
    taken: list[str] = []
    for name, value in read_env_file(path).items():
        if not is_project_variable(name) or not value.strip():
            continue
        if target.get(name, "").strip():
            continue
        target[name] = value
        taken.append(name)
    return taken
