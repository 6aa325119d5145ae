"""Who imports whom in blueprint/: the status computation stands below the verbs.

The watchdog serves status (its socket and its health endpoint); if computing status
needed the controller, and the controller the watchdog, every change to one would
ripple round the loop. Imports inside functions count: they are a loop all the same.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "blueprint"
STATUS_PATH = (
    "blueprint.states",
    "blueprint.status",
    "blueprint.control",
    "blueprint.health",
    "blueprint.statusd",
    "blueprint.watchdog",
    "blueprint.ledger",
)


def imports_of(path: Path) -> set[str]:
    """The blueprint modules `path` imports anywhere in it (top level, functions, typing)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] == "blueprint")
    return found


def import_graph() -> dict[str, set[str]]:
    return {f"blueprint.{path.stem}": imports_of(path) for path in PACKAGE.glob("*.py")}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(graph.get(module, ()))
    return seen


def test_the_states_module_is_a_leaf() -> None:
    assert imports_of(PACKAGE / "states.py") == set()


def test_no_module_on_the_status_path_is_in_an_import_loop() -> None:
    graph = import_graph()
    in_loops = {module for module in STATUS_PATH if module in reachable(graph, module)}
    assert in_loops == set()


def test_status_socket_and_health_endpoint_never_load_the_controller() -> None:
    graph = import_graph()
    for server in ("blueprint.statusd", "blueprint.health"):
        assert "blueprint.control" not in reachable(graph, server), server
    assert "blueprint.watchdog" not in reachable(graph, "blueprint.control")


def test_the_loop_finder_sees_a_loop_through_a_function_level_import(tmp_path: Path) -> None:
    (tmp_path / "one.py").write_text("def f():\n    from blueprint.two import g\n")
    (tmp_path / "two.py").write_text("from blueprint.one import f\n")
    graph = {f"blueprint.{path.stem}": imports_of(path) for path in tmp_path.glob("*.py")}
    assert "blueprint.one" in reachable(graph, "blueprint.one")


def test_importing_the_status_computation_loads_no_verbs_and_nothing_heavy() -> None:
    probe = (
        "import sys\n"
        "import blueprint.status, blueprint.statusd, blueprint.health\n"
        "heavy = ['blueprint.control', 'blueprint.watchdog', 'filelock', 'redis', 'asyncio']\n"
        "print(','.join(name for name in heavy if name in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
