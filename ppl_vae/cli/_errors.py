"""How the command line reports bad input: one line naming the file, the key or the option.

Kept free of heavy imports (torch) so that the command group can use it for every sub-command.
"""

from __future__ import annotations

import zlib

import click

from ppl_vae._io import DamagedFileError
from ppl_vae._lock import OutputInUseError

#: What the user handed in or where they asked to write, gone wrong: a damaged file,
#: an output another process holds, the file system (missing, read-only, full).
#: Reported as one line, exit status 1; never a traceback.
INPUT_ERRORS = (DamagedFileError, OutputInUseError, OSError, EOFError, zlib.error)


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (an ``OSError`` names its file: ``[Errno 30] ...: 'PATH'``)."""
    text = " ".join(str(err).split())
    return text or type(err).__name__


def input_error(err: BaseException) -> click.ClickException:
    """The one-line CLI error for one of :data:`INPUT_ERRORS`."""
    return click.ClickException(one_line(err))
