"""`lunara status` against `supervisorctl status`, both supervising the same bot.

    .venv/bin/python bench/status_vs_supervisorctl.py [--rounds 30]

Both supervisors run `python -m lunara` on its embedded defaults. The two status
commands are timed alternately in one run (so machine noise hits both alike); the
figure is the ratio of the medians. Target: ratio <= 0.6.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: bench, tests

from bench._common import bench_env, lunara, median_ms, timed, write_manifest


def supervisord_config(directory: Path, bot_home: Path) -> Path:
    config = directory / "supervisord.conf"
    config.write_text(
        textwrap.dedent(
            f"""
            [unix_http_server]
            file={directory}/supervisor.sock

            [supervisord]
            logfile={directory}/supervisord.log
            pidfile={directory}/supervisord.pid
            childlogdir={directory}

            [rpcinterface:supervisor]
            supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

            [supervisorctl]
            serverurl=unix://{directory}/supervisor.sock

            [program:lunara]
            command={sys.executable} -m lunara
            directory={bot_home}
            environment=LUNARA_HOME="{bot_home}"
            autostart=true
            autorestart=true
            stopwaitsecs=10
            """
        )
    )
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lunara-bench-") as scratch:
        base = Path(scratch)
        home = base / "lunara-home"
        home.mkdir()
        sup_home = base / "supervisor-home"
        sup_home.mkdir()
        manifest = write_manifest(base)
        config = supervisord_config(base, sup_home)
        bin_dir = Path(sys.executable).parent
        supervisorctl = [str(bin_dir / "supervisorctl"), "-c", str(config), "status"]

        lunara(["start", "--wait", "60"], home, manifest)
        subprocess.run([str(bin_dir / "supervisord"), "-c", str(config)], check=True)
        try:
            # Warm both up (page cache, bytecode) before measuring.
            for _ in range(3):
                lunara(["status"], home, manifest, check=False)
                subprocess.run(supervisorctl, capture_output=True, check=False)
            ours: list[float] = []
            theirs: list[float] = []
            for _ in range(args.rounds):
                ours.append(timed(lambda: lunara(["status"], home, manifest, check=False)))
                theirs.append(
                    timed(
                        lambda: subprocess.run(
                            supervisorctl, capture_output=True, check=False, env=bench_env(home)
                        )
                    )
                )
            check = lunara(["status", "--json"], home, manifest, check=False)
            if check.returncode != 0:
                print(f"lunara status exited {check.returncode}: {check.stdout}{check.stderr}")
                return 1
        finally:
            lunara(["stop"], home, manifest, check=False)
            subprocess.run(
                [str(bin_dir / "supervisorctl"), "-c", str(config), "shutdown"],
                capture_output=True,
                check=False,
            )

        ours_ms, theirs_ms = median_ms(ours), median_ms(theirs)
        ratio = ours_ms / theirs_ms
        print(f"rounds: {args.rounds} (alternating)")
        print(f"lunara status        median {ours_ms:7.1f} ms")
        print(f"supervisorctl status median {theirs_ms:7.1f} ms")
        print(
            f"ratio lunara/supervisorctl: {ratio:.2f} (target <= 0.6) -> {'PASS' if ratio <= 0.6 else 'FAIL'}"
        )
        return 0 if ratio <= 0.6 else 1


if __name__ == "__main__":
    sys.exit(main())
