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
