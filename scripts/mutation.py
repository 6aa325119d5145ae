"""Mutation-test the modules where a silent bug costs money or leaks a secret.

Each target in `[tool.lunara.mutation.NAME]` (pyproject.toml) names the files mutmut
mutates, the package they live in, the tests that check them and, optionally, the
functions to mutate (`mutants`, mutmut name patterns). A target runs in its own
directory, `mutants-work/NAME/`, so that it is mutated and tested on its own: mutmut
reads its settings from the `pyproject.toml` of the directory it runs in, and keeps its
results in `mutants/` there (delete the directory after changing the tests: mutmut keeps
earlier results). The rest of the project is linked in, not copied.

    scripts/with-redis.sh .venv/bin/python scripts/mutation.py [NAME ...]

prints one line per target, `NAME: killed/total (score %)`, after mutmut's own output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections import Counter
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "mutants-work"
LINKED = ("blueprint", "lunara", "tests", "manifest.json")
"""What a target's directory sees of the project: mutmut copies `source`, the tests and
`also_copy` into `mutants/`, and the tests run there (some read the shipped manifest)."""


def targets() -> dict[str, dict[str, Any]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    found: dict[str, dict[str, Any]] = data["tool"]["lunara"]["mutation"]
    return found


def mutmut_section(target: dict[str, Any]) -> str:
    """The `[tool.mutmut]` table for one target (TOML arrays of plain strings are JSON)."""
    source = str(target["source"])
    others = [entry for entry in LINKED if entry not in (source, "tests")]
    return (
        "\n[tool.mutmut]\n"
        f"source_paths = {json.dumps([source])}\n"
        f"only_mutate = {json.dumps(target['mutate'])}\n"
        f"also_copy = {json.dumps(others)}\n"
        f"pytest_add_cli_args_test_selection = {json.dumps(target['tests'])}\n"
    )


def prepare(name: str, target: dict[str, Any]) -> Path:
    """The target's directory: links to the project, and the project's settings plus
    the target's `[tool.mutmut]` (pytest's settings must be the project's own)."""
    home = WORK / name
    home.mkdir(parents=True, exist_ok=True)
    for entry in LINKED:
        link = home / entry
        if not link.is_symlink():
            link.symlink_to(ROOT / entry)
    settings = (ROOT / "pyproject.toml").read_text("utf-8") + mutmut_section(target)
    (home / "pyproject.toml").write_text(settings, "utf-8")
    return home


def score(home: Path, patterns: list[str]) -> Counter[str]:
    """Each mutant's outcome, counted from the `.meta` files mutmut leaves beside its
    mutated copies (only the mutants the target asks for, when it names some)."""
    outcomes: Counter[str] = Counter()
    for meta in (home / "mutants").rglob("*.py.meta"):
        for mutant, exit_code in json.loads(meta.read_text("utf-8"))["exit_code_by_key"].items():
            if not patterns or any(fnmatch(mutant, pattern) for pattern in patterns):
                outcomes[status_by_exit_code[exit_code]] += 1
    return outcomes


def run(name: str, target: dict[str, Any]) -> str:
    home = prepare(name, target)
    patterns = [str(pattern) for pattern in target.get("mutants", [])]
    mutmut = Path(sys.executable).parent / "mutmut"
    subprocess.run([str(mutmut), "run", *patterns], cwd=home, check=False)
    outcomes = score(home, patterns)
    total = sum(outcomes.values())
    killed = outcomes["killed"] + outcomes["timeout"] + outcomes["caught by type check"]
    percent = 100 * killed / total if total else 0.0
    unchecked = total - killed - outcomes["survived"]
    note = f", {unchecked} neither killed nor survived" if unchecked else ""
    return f"{name}: {killed}/{total} ({percent:.1f} %){note}"


def main(argv: list[str]) -> int:
    known = targets()
    names = argv or list(known)
    unknown = [name for name in names if name not in known]
    if unknown:
        print(f"unknown target(s): {', '.join(unknown)}; known: {', '.join(known)}")
        return 2
    lines = [run(name, known[name]) for name in names]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
