"""Shape arithmetic in plain Python.

``torch.broadcast_shapes`` imports ``torch.fx.experimental.symbolic_shapes``
(and with it sympy: about half a second on the development CPU) the first time
it runs; a loss that calls it on every step makes every command that trains pay
that import. :func:`broadcast_shapes` gives the same answer from the sizes alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def broadcast_shapes(*shapes: Sequence[int]) -> torch.Size:
    """The shape that tensors of ``shapes`` broadcast to, as ``torch.broadcast_shapes`` gives it.

    Raises
    ------
    RuntimeError
        Two shapes have different sizes other than 1 in one (right-aligned) dimension.
    """
    ndim = max((len(shape) for shape in shapes), default=0)
    padded = [(1,) * (ndim - len(shape)) + tuple(int(size) for size in shape) for shape in shapes]
    result = []
    for position, sizes in enumerate(zip(*padded)):
        other = {size for size in sizes if size != 1}
        if len(other) > 1:
            raise RuntimeError(f"shapes {[tuple(shape) for shape in shapes]} cannot be broadcast: dimension "
                               f"{position - ndim} has sizes {sorted(other)}")
        result.append(other.pop() if other else 1)
    return torch.Size(result)
