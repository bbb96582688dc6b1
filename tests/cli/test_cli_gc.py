"""While a command runs the cyclic garbage collector runs less often; the caller's thresholds come back after."""

import gc
import sys

import click
from click.testing import CliRunner

import ppl_vae.cli as cli


def test_a_command_runs_with_the_raised_threshold_and_restores_the_callers(monkeypatch):
    seen = []
    probe = click.Command("probe", callback=lambda: seen.append(gc.get_threshold()))
    monkeypatch.setitem(cli.SUBCOMMANDS, "probe", ("probe", "Probe."))
    monkeypatch.setattr(cli._LazyGroup, "get_command", lambda self, ctx, name: probe if name == "probe" else None)
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        result = CliRunner().invoke(cli.main, ["probe"])
        assert result.exit_code == 0, result.output
        assert seen == [(cli.GC_THRESHOLD, 10, 10)]
        assert gc.get_threshold() == (700, 10, 10)
        failing = click.Command("probe", callback=lambda: 1 / 0)
        monkeypatch.setattr(cli._LazyGroup, "get_command", lambda self, ctx, name: failing)
        assert CliRunner().invoke(cli.main, ["probe"]).exit_code != 0
        assert gc.get_threshold() == (700, 10, 10)  # restored after a failure too
    finally:
        gc.set_threshold(*before)


def test_the_console_script_keeps_freed_memory_and_freezes_its_objects_at_the_end(monkeypatch):
    import ppl_vae._allocator

    calls = []
    monkeypatch.setattr(ppl_vae._allocator, "keep_freed_memory", lambda: calls.append("allocator"))
    monkeypatch.setattr(cli.gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(sys, "argv", ["ppl-vae", "--help"])
    try:
        cli.run()
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    assert calls == ["allocator", "freeze"]
