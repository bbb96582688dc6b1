"""A sweep from the command line imports only what it uses: no ArviZ, matplotlib, SciPy's optimiser, dynamo, sympy.

ArviZ costs a second or more to import (it imports matplotlib and SciPy's
statistics), the report's plotting stack as much again, SciPy's optimiser (the
theory's numeric solutions, which an MLP sweep never asks for) about half a
second, ``torch._dynamo`` (which ``torch.optim`` imports at its first step)
over a second and sympy (which ``torch.broadcast_shapes`` imports) half a
second; a sweep writes its diagnostics as xarray trees, draws nothing and
compiles nothing, so none may come back on its path (a cache-key helper imported
from the report, a top-level ``import arviz``, a ``torch.optim`` optimiser, a
``torch.broadcast_shapes`` in the loss).
"""

import subprocess
import sys

#: Modules a sweep must not import (what the report and ArviZ bring).
NOT_ON_THE_SWEEP_PATH = ("arviz", "matplotlib", "seaborn", "scipy.optimize", "torch._dynamo", "sympy",
                         "ppl_vae.report", "ppl_vae.plots")

_SWEEP_THEN_LIST = """
import sys
from click.testing import CliRunner
from ppl_vae.cli import main
result = CliRunner().invoke(main, ["sweep", "--model", "cvae", "--arch", "mlp", "--data", "synthetic",
                                   "--n-samples", "60", "--dim", "6", "--latent-dim", "2", "--hidden", "4",
                                   "--beta", "0.5,2", "--seeds", "0", "--steps", "3", "--iw-samples", "4",
                                   "--threads", "1", "--quiet", "--out", sys.argv[1]])
assert result.exit_code == 0, result.output
print(" ".join(sorted(name for name in {names!r} if name in sys.modules)))
"""


def test_a_sweep_writes_its_files_without_importing_arviz_or_the_report(tmp_path):
    out = tmp_path / "sweep"
    code = _SWEEP_THEN_LIST.format(names=NOT_ON_THE_SWEEP_PATH)
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, check=True)
    assert (out / "combined.nc").is_file() and any((out / "store").glob("*.nc"))  # it did write everything
    assert done.stdout.split() == [], f"the sweep imported {done.stdout.strip()}"


def test_importing_the_diagnostics_package_does_not_import_arviz():
    code = "import sys, ppl_vae.diagnostics; print('arviz' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
