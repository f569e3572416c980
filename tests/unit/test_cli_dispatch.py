"""A command line naming one command imports only that command's module (start-up time)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from watchdog_daemon import cli


def commands_of(module_name: str) -> set[str]:
    parser = cli.build_parser(module_name)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_every_command_maps_to_the_module_that_registers_it() -> None:
    seen: set[str] = set()
    for module_name in cli.SUBCOMMAND_MODULES:
        for command in commands_of(module_name):
            assert cli.COMMAND_MODULES.get(command) == module_name, command
            seen.add(command)
    assert seen == set(cli.COMMAND_MODULES)


def test_a_conf_command_does_not_import_the_check_or_the_watchdog(tmp_path: Path) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=hpc\n")
    code = (
        "import sys; from watchdog_daemon import cli; "
        f"rc = cli.main(['conf', 'plan', '--file', {str(conf)!r}, '--jwt-key', '/k', '--json']); "
        "print(rc, sorted(m for m in sys.modules if m.startswith(('watchdog_daemon.check', "
        "'watchdog_daemon.watch', 'requests', 'watchdog.'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.strip().splitlines()[-1] == "0 []"


def test_help_without_a_command_still_lists_every_command(capsys) -> None:
    try:
        cli.main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for command in cli.COMMAND_MODULES:
        assert command in out


def test_every_subcommand_module_is_there_and_a_missing_one_is_an_error(monkeypatch):
    import pytest

    commands = set(cli.build_parser()._subparsers._group_actions[0].choices)
    assert set(cli.COMMAND_MODULES) <= commands
    monkeypatch.setitem(cli.SUBCOMMAND_MODULES, "absent.cli", "absent: gone")
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser()
