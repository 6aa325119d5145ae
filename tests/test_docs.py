"""The operator docs stay true to the code: generated reference, quick start, CLI table."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import typer

ROOT = Path(__file__).resolve().parents[1]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_config_docs", ROOT / "scripts" / "gen_config_docs.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _command_names(app: typer.Typer, prefix: str = "") -> list[str]:
    names: list[str] = []
    for command in app.registered_commands:
        assert command.callback is not None
        names.append(prefix + (command.name or command.callback.__name__.replace("_", "-")))
    for group in app.registered_groups:
        assert group.typer_instance is not None
        assert group.name is not None
        names.extend(_command_names(group.typer_instance, f"{prefix}{group.name} "))
    return names


def test_configuration_reference_is_the_generators_output() -> None:
    generator = _generator()
    expected = generator.render((ROOT / ".env.example").read_text())
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == expected, "run: python scripts/gen_config_docs.py"


def test_telegram_reference_is_the_generators_output() -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_telegram_docs", ROOT / "scripts" / "gen_telegram_docs.py"
    )
    assert spec is not None
    assert spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    committed = (ROOT / "docs" / "telegram.md").read_text()
    assert committed == generator.render(), "run: python scripts/gen_telegram_docs.py"


def test_configuration_reference_names_every_setting_and_control_plane_variable() -> None:
    from lunara.config import CLI_ONLY_VARIABLES, settings_variables

    committed = (ROOT / "docs" / "configuration.md").read_text()
    for variable in set(settings_variables()) | CLI_ONLY_VARIABLES:
        assert f"### `{variable}`" in committed, variable


def test_readme_quick_start_gives_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make run" in quick_start
    assert "make test" in quick_start


def test_every_cli_command_has_a_row_in_the_cli_reference() -> None:
    import lunara.commands  # noqa: F401  (registers the bot's commands on the app)
    from blueprint.commands import app

    readme = (ROOT / "README.md").read_text()
    reference = readme.split("## CLI", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]*)`", reference, flags=re.MULTILINE)
    missing = [
        name
        for name in _command_names(app)
        if not any(row == name or row.startswith(name + " ") for row in rows)
        and not any(f"`{name} " in row or f"/ `{name}" in row for row in reference.splitlines())
    ]
    assert missing == []


def _layout_paths(readme: str) -> set[str]:
    """The module paths the README's Layout tree names: a line's indentation (two spaces
    a level) places its first word under the nearest directory above it."""
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    paths: set[str] = set()
    parents: list[tuple[int, str]] = []  # (indentation, directory) from the root down
    for line in block.splitlines():
        word = line.strip().split(" ", 1)[0] if line.strip() else ""
        if not (word.endswith("/") or word.endswith(".py")):
            continue
        indent = len(line) - len(line.lstrip(" "))
        while parents and parents[-1][0] >= indent:
            parents.pop()
        path = "".join(directory for _, directory in parents) + word
        if word.endswith("/"):
            parents.append((indent, word))
        else:
            paths.add(path)
    return paths


def test_the_readme_layout_lists_every_module_and_only_those() -> None:
    modules = {
        str(path.relative_to(ROOT))
        for package in ("blueprint", "lunara")
        for path in (ROOT / package).rglob("*.py")
        if path.name not in {"__init__.py", "__main__.py"}
    }
    listed = _layout_paths((ROOT / "README.md").read_text())
    assert sorted(modules - listed) == [], "modules missing from the README's Layout"
    assert sorted(listed - modules) == [], "the README's Layout names modules that are gone"
