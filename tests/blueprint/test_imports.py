"""Who imports whom in blueprint/ and lunara/: no two modules import each other.

The watchdog serves status (its socket and its health endpoint); if computing status
needed the controller, and the controller the watchdog, every change to one would
ripple round the loop. The same holds across both packages: a module that imports
another which (directly or round a loop) imports it back cannot be read, tested or
moved on its own.

Every import counts: at the top of a module, inside a function (a loop all the same,
only deferred), and under `if TYPE_CHECKING:` (a loop in the types is a loop in the
design). `from package import name` depends on `package.name` when that is a module,
else on the package itself; a submodule's implicit import of its parent package (which
Python performs for every submodule) is not counted, or a package re-exporting its
submodules would always be a loop.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "blueprint"
OUR_PACKAGES = ("blueprint", "lunara")
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


def modules_under(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every module of `packages` under `root`."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def dependencies_of(name: str, path: Path, known: Mapping[str, Path]) -> set[str]:
    """The modules of `known` that module `name` imports anywhere in its file."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from lunara.analysis import indicators` needs the submodule, not the
            # package's own code; `from lunara.config import Settings` needs the module.
            submodules = [f"{base}.{alias.name}" for alias in node.names]
            targets = [module for module in submodules if module in known]
            if len(targets) < len(submodules):
                targets.append(base)
        else:
            continue
        found.update(target for target in targets if target in known and target != name)
    return found


def whole_graph(root: Path = ROOT, packages: Iterable[str] = OUR_PACKAGES) -> dict[str, set[str]]:
    known = modules_under(root, packages)
    return {name: dependencies_of(name, path, known) for name, path in known.items()}


def find_loop(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One import loop as [a, b, ..., a], or None when the graph has none.

    A depth-first walk over every module (iteratively: a deep package must not hit the
    recursion limit); an edge back to a module still on the walk's path closes a loop.
    """
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path = [start]
        on_path = {start}
        pending = [iter(sorted(graph.get(start, ())))]
        while pending:
            following = next(pending[-1], None)
            if following is None:
                pending.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
                continue
            if following in on_path:
                return [*path[path.index(following) :], following]
            if following in done:
                continue
            path.append(following)
            on_path.add(following)
            pending.append(iter(sorted(graph.get(following, ()))))
    return None


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


def test_no_module_of_blueprint_or_lunara_is_in_an_import_loop() -> None:
    graph = whole_graph()
    assert "lunara.storage.migrations" in graph and "blueprint.cli" in graph  # it read them
    loop = find_loop(graph)
    assert loop is None, "import loop: " + " -> ".join(loop or [])


def _write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_loop_finder_names_a_loop_through_functions_typing_and_relative_imports(
    tmp_path: Path,
) -> None:
    _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/alpha.py": "def f():\n    from pkg.beta import g\n",
            "pkg/beta.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from .sub import gamma\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/gamma.py": "from .. import alpha\n",
        },
    )
    graph = whole_graph(tmp_path, ["pkg"])
    assert graph["pkg.sub.gamma"] == {"pkg.alpha"}
    assert find_loop(graph) == ["pkg.alpha", "pkg.beta", "pkg.sub.gamma", "pkg.alpha"]


def test_a_package_re_exporting_its_submodules_is_not_a_loop(tmp_path: Path) -> None:
    _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.core import run\n",
            "pkg/core.py": "from pkg import helpers\nfrom pkg.helpers import aid\n",
            "pkg/helpers.py": "aid = 1\n",
        },
    )
    graph = whole_graph(tmp_path, ["pkg"])
    assert graph["pkg.core"] == {"pkg.helpers"}
    assert find_loop(graph) is None
    # ...but a submodule that uses what the package itself defines does close a loop.
    (tmp_path / "pkg" / "helpers.py").write_text("from pkg import run\n", encoding="utf-8")
    assert find_loop(whole_graph(tmp_path, ["pkg"])) == ["pkg", "pkg.core", "pkg.helpers", "pkg"]
