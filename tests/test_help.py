"""Every command and option explains itself (a habit from sqlite-utils)."""

from __future__ import annotations

import click
import pytest

from newsletter.cli import cli


def _commands(group: click.Group, prefix: str = "newsletter") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = [(prefix, group)]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix} {name}")
        else:
            found.append((f"{prefix} {name}", command))
    return found


COMMANDS = _commands(cli)


def test_the_expected_commands_exist() -> None:
    names = {name for name, _ in COMMANDS}
    assert {"newsletter check", "newsletter preview", "newsletter fetch"} <= names


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_command_and_options_have_help(name: str, command: click.Command) -> None:
    assert command.help, f"{name} has no help text"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{name} {param.opts[0]} has no help text"


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_command_takes_a_config_file(name: str, command: click.Command) -> None:
    if isinstance(command, click.Group):
        return
    assert any("--config" in p.opts for p in command.params if isinstance(p, click.Option)), name


def test_the_config_option_names_the_default_that_config_uses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The option's help spells the variable and the file name out (config.py is not loaded
    for --help): they must be the ones config.default_path() reads."""
    from newsletter import config

    option = next(p for p in cli.commands["check"].params if "--config" in p.opts)
    assert isinstance(option, click.Option)
    assert option.show_default == f"${config.ENV_VAR}, then ./{config.DEFAULT_PATH}"
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    assert option.get_default(click.Context(cli.commands["check"])) == config.DEFAULT_PATH
    monkeypatch.setenv(config.ENV_VAR, "elsewhere.yaml")
    assert option.get_default(click.Context(cli.commands["check"])) == "elsewhere.yaml"
