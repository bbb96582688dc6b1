"""``ppl_vae`` exports the everyday functions lazily: importing the package costs no torch."""

import subprocess
import sys


def test_import_ppl_vae_alone_imports_no_torch_pyro_or_arviz():
    code = "import sys, ppl_vae; print(' '.join(m for m in ('torch', 'pyro', 'arviz') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == []


def test_the_everyday_functions_import_from_the_package():
    from ppl_vae import combine, compare_heldout, diagnose, fit, load, save, theory
    import ppl_vae.diagnostics
    import ppl_vae.inference
    import ppl_vae.theory

    assert (diagnose, save, load, combine, compare_heldout) == (
        ppl_vae.diagnostics.diagnose, ppl_vae.diagnostics.save, ppl_vae.diagnostics.load,
        ppl_vae.diagnostics.combine, ppl_vae.diagnostics.compare_heldout)
    assert fit is ppl_vae.inference.fit and theory is ppl_vae.theory
    assert isinstance(ppl_vae.__version__, str) and "fit" in dir(ppl_vae)


def test_an_unknown_name_is_an_attribute_error():
    import ppl_vae

    try:
        ppl_vae.no_such_thing
    except AttributeError as err:
        assert "no_such_thing" in str(err)
    else:
        raise AssertionError("ppl_vae.no_such_thing did not raise")
