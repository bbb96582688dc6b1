"""The ``ppl-vae`` command line.

Each sub-command lives in its own module of this package and exposes a click
command named ``command``; they are imported only when invoked (the listing of
``ppl-vae --help`` comes from :data:`SUBCOMMANDS`), and each imports torch, Pyro,
ArviZ or matplotlib only inside its body, so that every ``--help`` is fast.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import time
from collections.abc import Iterator

import click

#: When the command line started (the sweep's summary counts its time from here).
STARTED = time.perf_counter()

#: sub-command name -> (module relative to this package defining ``command``, its short help as
#: click derives it from the docstring; tests/cli/test_cli_imports.py holds them equal)
SUBCOMMANDS = {
    "theory": ("theory", "Predict which latent modes of a linear VAE, CVAE or MHVAE collapse (closed form, no "
                         "training)."),
    "train": ("train", "Train a model by SVI and write config, checkpoint, loss history and metrics to --out."),
    "report": ("report", "Diagnose RUN_DIR..."),
    "reproduce": ("reproduce", "Reproduce the experiments of Dang et al."),
    "bench": ("bench", "Benchmark Pyro SVI against plain PyTorch, time to the theory, and the vectorised sweep."),
    "sweep": ("sweep", "Train every configuration of a grid, one run directory each, and write combined.nc."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The listing of ``--help`` from :data:`SUBCOMMANDS`, importing no sub-command."""
        limit = formatter.width - 6 - max(map(len, SUBCOMMANDS))
        rows = [(name, click.Command(name, help=SUBCOMMANDS[name][1]).get_short_help_str(limit))
                for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module_name = SUBCOMMANDS[name][0]
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as err:
            if err.name == f"{__name__}.{module_name}":
                return None  # not built yet
            raise
        return module.command

    def invoke(self, ctx: click.Context):
        """Run the sub-command; bad input it did not report itself becomes one line, never a traceback.

        A damaged file, an output another process holds, a file-system refusal
        (missing, read-only, full) or an unexpected end of input (which click would
        print as a bare ``Aborted!``) ends with ``Error: <what, naming the file>``
        and exit status 1. ``PPL_VAE_DEBUG=1`` lets the traceback through.
        """
        from ppl_vae.cli._errors import INPUT_ERRORS, input_error

        try:
            with _fewer_collections():
                return super().invoke(ctx)
        except INPUT_ERRORS as err:
            if os.environ.get("PPL_VAE_DEBUG") == "1":
                raise
            raise input_error(err) from None


#: Allocations between two collections of the youngest generation while a command runs (Python's default: 700).
GC_THRESHOLD = 10_000


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """Python's cyclic garbage collector run less often while a command runs; the thresholds restored after.

    A command imports torch and builds hundreds of thousands of objects (modules,
    xarray datasets) that live until it exits: at the default threshold the
    collector scans them again and again (about 580 collections, 0.35 s of CPU in
    a one-epoch sweep on the development machine), at 10,000 some 40 collections
    and 0.15 s. Memory freed by reference counting, which is nearly all of it,
    is unaffected.
    """
    before = gc.get_threshold()
    gc.set_threshold(max(GC_THRESHOLD, before[0]), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ppl-vae")
def main() -> None:
    """Detect, predict and explain posterior collapse in VAEs, CVAEs and MHVAEs."""


def run() -> None:
    """The ``ppl-vae`` console script: :func:`main` as a whole process.

    Two settings belong to the process, not to :func:`main` (which tests and
    callers invoke in their own processes):

    - freed tensor memory is kept for reuse (:func:`ppl_vae._allocator.keep_freed_memory`):
      up to 20% of a training step on the CPU went to faulting fresh pages in;
    - at the end every object is frozen out of the cyclic garbage collector
      (``gc.freeze``), so that the interpreter's exit does not traverse the
      hundreds of thousands of objects torch, Pyro and xarray built: on the
      development machine the exit of a one-epoch sweep took 0.9 s, frozen 0.2 s.
      Every file is closed by then (each is written atomically and closed before
      it is renamed into place), and reference counting still frees the rest.
    """
    from ppl_vae._allocator import keep_freed_memory

    keep_freed_memory()
    try:
        main()
    finally:
        gc.freeze()


__all__ = ["main", "run"]
