"""`python -m bench.soak`: the command line (see the package's docstring)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import bench.soak
from bench.soak.report import report, write_rss
from bench.soak.run import SHORT_ONBOARD, SHORT_RUN_MIN, run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=(bench.soak.__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--rate", type=float, default=6.0, help="commands per second")
    parser.add_argument("--onboard", type=int, default=None,
                        help="users onboarded through Telegram (/start, /setkeys, /settings); "
                        f"the rest are seeded in the database (default: all, "
                        f"{SHORT_ONBOARD} in runs under {SHORT_RUN_MIN:g} minutes)")  # fmt: skip
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the scratch directory (with bot-rss.csv, the RSS samples)",
    )
    args = parser.parse_args(argv)
    if args.onboard is None and args.minutes < SHORT_RUN_MIN:
        args.onboard = SHORT_ONBOARD
    print(f"soak seed {args.seed} (rerun with --seed {args.seed})", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="lunara-soak-"))
    try:
        data = run(args, workdir)
        if args.keep:
            write_rss(data, workdir / "bot-rss.csv")
        return 0 if report(data) else 1
    finally:
        if args.keep:
            print(f"  scratch directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    sys.exit(main())
