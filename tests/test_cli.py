"""The `p2p` entry point: every subcommand is registered and explains itself."""
import subprocess
import sys

import pytest

from p2p_lib.cli import build_parser, main

COMMANDS = ["download", "check-data", "combine", "train", "test", "translate"]


def test_every_command_is_listed_in_the_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for command in COMMANDS:
        assert command in text


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help_a_user_can_follow(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: p2p " + command)
    assert len(text.splitlines()) > 5


def test_unknown_command_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit) as info:
        main(["trian"])
    assert info.value.code == 2
    assert "invalid choice: 'trian'" in capsys.readouterr().err


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "p2p_lib.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "translate" in result.stdout
    assert sorted(build_parser()._subparsers._group_actions[0].choices) == sorted(COMMANDS)
