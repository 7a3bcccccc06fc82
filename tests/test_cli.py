"""The `p2p` entry point: every subcommand is registered and explains itself."""
import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from p2p_lib.cli import build_parser, main

COMMANDS = ["download", "download-model", "check-data", "combine", "make-pairs", "train", "test", "translate",
            "export"]


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
    subcommand = build_parser()._subparsers._group_actions[0].choices[command]
    assert subcommand.description, f"p2p {command} has no description"
    undocumented = [action.option_strings or action.dest for action in subcommand._actions
                    if action.help is None]  # argparse.SUPPRESS (hidden official options) is not None
    assert not undocumented, f"p2p {command}: options without help: {undocumented}"
    for action in subcommand._actions:
        if action.help not in (None, argparse.SUPPRESS) and action.option_strings:
            assert action.option_strings[0] in text  # and the help shows it


def test_unknown_command_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit) as info:
        main(["trian"])
    assert info.value.code == 2
    assert "invalid choice: 'trian'" in capsys.readouterr().err


def test_the_installed_p2p_command_runs():
    """The console script pip installed (`p2p` beside this Python), not `python -m`: the entry point in
    pyproject.toml must lead to p2p_lib.cli:main."""
    script = Path(sys.executable).parent / "p2p"
    assert script.is_file(), f"no installed console script at {script}: pip install -e . makes it"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage: p2p")
    assert all(command in result.stdout for command in COMMANDS)
    wrong = subprocess.run([str(script), "trian"], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "invalid choice: 'trian'" in wrong.stderr
    assert sorted(build_parser()._subparsers._group_actions[0].choices) == sorted(COMMANDS)
