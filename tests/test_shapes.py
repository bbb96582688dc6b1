"""ppl_vae._shapes.broadcast_shapes answers as torch.broadcast_shapes does, without importing sympy."""

import subprocess
import sys

import pytest
import torch

from ppl_vae._shapes import broadcast_shapes

CASES = [((), ()), ((3,), ()), ((2, 1, 4), (5, 1)), ((1,), (0,)), ((7, 1, 3), (1, 6, 1), (6, 3)),
         (torch.Size([16, 128, 8]), torch.Size([16, 1, 8])), ((2, 3), (1, 1, 1, 3))]


@pytest.mark.parametrize("shapes", CASES)
def test_it_gives_torchs_broadcast_shape(shapes):
    assert broadcast_shapes(*shapes) == torch.broadcast_shapes(*shapes)


@pytest.mark.parametrize("shapes", [((2,), (3,)), ((4, 2), (2, 4)), ((0,), (2,))])
def test_shapes_that_do_not_broadcast_are_refused_as_torch_refuses_them(shapes):
    with pytest.raises(RuntimeError):
        torch.broadcast_shapes(*shapes)
    with pytest.raises(RuntimeError, match="cannot be broadcast"):
        broadcast_shapes(*shapes)


def test_it_imports_no_sympy():
    code = ("import sys; from ppl_vae._shapes import broadcast_shapes; broadcast_shapes((2, 1), (3,)); "
            "print('sympy' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
