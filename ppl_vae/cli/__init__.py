"""The ``ppl-vae`` command line.

Each sub-command lives in its own module of this package and exposes a click
command named ``command``; they are imported only when invoked so that
``ppl-vae --help`` stays fast.
"""

from __future__ import annotations

import importlib
import os

import click

#: sub-command name -> module (relative to this package) defining ``command``
SUBCOMMANDS = {
    "theory": "theory",
    "train": "train",
    "report": "report",
    "reproduce": "reproduce",
    "bench": "bench",
    "sweep": "sweep",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module_name = SUBCOMMANDS.get(name)
        if module_name is None:
            return None
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
            return super().invoke(ctx)
        except INPUT_ERRORS as err:
            if os.environ.get("PPL_VAE_DEBUG") == "1":
                raise
            raise input_error(err) from None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ppl-vae")
def main() -> None:
    """Detect, predict and explain posterior collapse in VAEs, CVAEs and MHVAEs."""


__all__ = ["main"]
