"""Every ``--help`` imports only what it uses: no torch, Pyro, ArviZ, xarray or matplotlib."""

import importlib
import subprocess
import sys

import pytest

from ppl_vae.cli import SUBCOMMANDS

HEAVY = ("torch", "pyro", "arviz", "xarray", "matplotlib", "seaborn", "sklearn", "scipy")

_HELP_EVERYWHERE = """
import sys
from click.testing import CliRunner
from ppl_vae.cli import SUBCOMMANDS, main
for args in [[], *([name] for name in SUBCOMMANDS)]:
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0, (args, result.output)
    assert "Usage:" in result.output, args
print(" ".join(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def test_help_of_every_command_imports_nothing_heavy():
    code = _HELP_EVERYWHERE.format(heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [], f"--help imported {done.stdout.strip()}"


def test_the_group_help_lists_every_command_with_its_own_short_help():
    """The listing comes from SUBCOMMANDS (no import): it must say what each command's docstring says."""
    for name, (module, short_help) in SUBCOMMANDS.items():
        command = importlib.import_module(f"ppl_vae.cli.{module}").command
        assert command.get_short_help_str(limit=10_000) == short_help, name


def test_a_bad_experiment_name_is_still_refused_with_the_names_allowed():
    from click.testing import CliRunner

    from ppl_vae.cli import main
    from ppl_vae.reproduce import EXPERIMENTS

    result = CliRunner().invoke(main, ["reproduce", "--only", "nope", "--out", "never-made"])
    assert result.exit_code == 2 and "nope" in result.output
    assert next(iter(EXPERIMENTS)) in result.output


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_each_command_help_runs(command):
    from click.testing import CliRunner

    from ppl_vae.cli import main

    assert CliRunner().invoke(main, [command, "--help"]).exit_code == 0
