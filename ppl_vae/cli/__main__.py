"""``python -m ppl_vae.cli``: the ``ppl-vae`` command (as the bench starts it, with this interpreter)."""

from ppl_vae.cli import run

run()
