"""Image data: scikit-learn's bundled 8x8 digits and local MNIST IDX files.

For a CVAE an image is cut into a condition ``x`` and an output ``y``
(SPEC 6.2):

``'quadrant'``
    ``x`` = bottom-left quadrant; ``y`` = the other three quadrants
    concatenated in the order top-left, top-right, bottom-right.
``'half'``
    ``x`` = left half; ``y`` = right half.

Every piece is flattened row-major. :func:`join_split` is the exact inverse of
:func:`split_images`, for display. Nothing here downloads anything: MNIST is
read from files the user has placed in a local directory.
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from ppl_vae._validate import check_choice, check_finite_matrix, check_int_range
from ppl_vae.data.bundle import DataBundle

#: CVAE image splits; ``None`` means the full image as a single input.
SPLITS: tuple[str | None, ...] = (None, "quadrant", "half")

#: Order in which the quadrants of ``y`` are concatenated under ``'quadrant'``.
QUADRANT_ORDER: tuple[str, ...] = ("top-left", "top-right", "bottom-right")

MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# IDX type codes (third magic byte) -> big-endian NumPy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


# --------------------------------------------------------------------------- IDX


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), plain or gzip-compressed.

    Parameters
    ----------
    path
        File to read. Compression is detected from the content, not the name.

    Returns
    -------
    numpy.ndarray
        Array with the dimensions and element type stored in the header
        (native byte order), e.g. ``(n, 28, 28)`` uint8 for MNIST images.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the header is malformed or the payload size does not match it.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file: the first two bytes must be zero")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in _IDX_DTYPES)
        raise ValueError(f"{path}: unknown IDX type code 0x{type_code:02X}; allowed: {known}")
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions declared)")
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_end != expected:
        raise ValueError(
            f"{path}: IDX payload has {len(raw) - header_end} bytes, header {shape} of {dtype} needs {expected}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


# ------------------------------------------------------------------------ splits


def _check_split(split: str | None) -> str | None:
    if split is not None:
        check_choice("split", split, [s for s in SPLITS if s is not None])
    return split


def _check_even_shape(image_shape) -> tuple[int, int]:
    if len(image_shape) != 2:
        raise ValueError(f"image_shape must be (height, width), got {tuple(image_shape)!r}")
    height, width = (int(size) for size in image_shape)
    if height < 2 or width < 2 or height % 2 or width % 2:
        raise ValueError(f"image height and width must be even and >= 2 to split, got {height} x {width}")
    return height, width


def _concat(pieces, axis: int):
    """``np.concatenate`` or ``torch.cat``, matching the input type."""
    if isinstance(pieces[0], torch.Tensor):
        return torch.cat(pieces, axis)
    return np.concatenate(pieces, axis)


def split_images(images, split: str | None):
    """Cut images into a CVAE condition ``x`` and output ``y``.

    Parameters
    ----------
    images
        ``(n, H, W)`` array or tensor; ``H`` and ``W`` even unless ``split`` is None.
    split
        ``'quadrant'``, ``'half'`` or ``None`` (module docstring gives the layout).

    Returns
    -------
    x, y
        ``'quadrant'``: ``(n, H W / 4)`` and ``(n, 3 H W / 4)``;
        ``'half'``: ``(n, H W / 2)`` twice; ``None``: ``(n, H W)`` and ``None``.
        Same type as ``images``.
    """
    split = _check_split(split)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (n, height, width), got shape {tuple(images.shape)}")
    n = images.shape[0]
    if split is None:
        return images.reshape(n, -1), None
    height, width = _check_even_shape(images.shape[1:])
    h, w = height // 2, width // 2
    if split == "half":
        return images[:, :, :w].reshape(n, -1), images[:, :, w:].reshape(n, -1)
    quadrants = {
        "top-left": images[:, :h, :w],
        "top-right": images[:, :h, w:],
        "bottom-left": images[:, h:, :w],
        "bottom-right": images[:, h:, w:],
    }
    y = _concat([quadrants[name].reshape(n, -1) for name in QUADRANT_ORDER], 1)
    return quadrants["bottom-left"].reshape(n, -1), y


def join_split(x, y, image_shape, split: str | None):
    """Put a split back together into images, for display.

    Exact inverse of :func:`split_images`.

    Parameters
    ----------
    x, y
        ``(n, d_x)`` and ``(n, d_y)`` arrays or tensors as returned by
        :func:`split_images` (``y`` is None when ``split`` is None).
    image_shape
        ``(H, W)`` of the full image.
    split
        ``'quadrant'``, ``'half'`` or ``None``.

    Returns
    -------
    images
        ``(n, H, W)``, same type as ``x``.
    """
    split = _check_split(split)
    if split is None:
        if y is not None:
            raise ValueError("y must be None when split is None")
        height, width = (int(size) for size in image_shape)
        return x.reshape(x.shape[0], height, width)
    if y is None:
        raise ValueError(f"y is required to join a {split!r} split")
    height, width = _check_even_shape(image_shape)
    h, w = height // 2, width // 2
    n = x.shape[0]
    x_size, y_size = (h * w, 3 * h * w) if split == "quadrant" else (height * w, height * w)
    if x.ndim != 2 or y.ndim != 2 or tuple(x.shape) != (n, x_size) or tuple(y.shape) != (n, y_size):
        raise ValueError(
            f"a {split!r} split of {height} x {width} images needs x of shape (n, {x_size}) and y of shape "
            f"(n, {y_size}), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if split == "half":
        return _concat([x.reshape(n, height, w), y.reshape(n, height, w)], 2)
    quadrants = dict(zip(QUADRANT_ORDER, (y[:, i * h * w : (i + 1) * h * w].reshape(n, h, w) for i in range(3))))
    quadrants["bottom-left"] = x.reshape(n, h, w)
    top = _concat([quadrants["top-left"], quadrants["top-right"]], 2)
    bottom = _concat([quadrants["bottom-left"], quadrants["bottom-right"]], 2)
    return _concat([top, bottom], 1)


# ----------------------------------------------------------------------- bundles


def _check_classes(classes: Iterable[int] | None) -> list[int] | None:
    if classes is None:
        return None
    if isinstance(classes, (str, bytes)):
        raise ValueError(f"classes must be an iterable of digit labels in 0..9, got {classes!r}")
    try:
        chosen = sorted({check_int_range("classes", label, low=0, high=9) for label in classes})
    except TypeError:
        raise ValueError(f"classes must be an iterable of digit labels in 0..9, got {classes!r}") from None
    if not chosen:
        raise ValueError("classes must name at least one digit label in 0..9, got an empty iterable")
    return chosen


def _keep_classes(images: np.ndarray, labels: np.ndarray, classes: list[int] | None, what: str):
    """The images and labels whose label is in ``classes`` (all when None)."""
    if classes is None:
        return images, labels
    keep = np.isin(labels, classes)
    if not keep.any():
        raise ValueError(f"classes {classes} select no images of {what}")
    return images[keep], labels[keep]


def _image_bundle(name: str, images: np.ndarray, labels: np.ndarray, split: str | None, attrs: dict) -> DataBundle:
    """Split ``(n, H, W)`` images with pixels in [0, 1] and wrap them as float32."""
    x, y = split_images(images, split)

    def as_float32(label: str, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(check_finite_matrix(label, array), dtype=np.float32))

    return DataBundle(
        name,
        as_float32("x", x),
        None if y is None else as_float32("y", y),
        labels=torch.from_numpy(labels.astype(np.int64)),
        image_shape=(int(images.shape[1]), int(images.shape[2])),
        split=split,
        attrs=attrs,
    )


def bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as ``(images (1797, 8, 8) float64 in 0..16, labels (1797,) int64)``.

    Read straight from the CSV that scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``,
    64 pixel columns then the class), the file ``sklearn.datasets.load_digits`` reads: importing
    ``sklearn.datasets`` costs most of a second of every command's start-up. Falls back to
    ``load_digits`` when the file is not where scikit-learn keeps it.
    """
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    path = None if spec is None or not spec.submodule_search_locations else \
        Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits as sklearn_digits

        digits = sklearn_digits()
        return digits.images, np.asarray(digits.target, dtype=np.int64)
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def load_digits(*, classes: Iterable[int] | None = None, split: str | None = None) -> DataBundle:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download).

    Parameters
    ----------
    classes
        Digit labels (0..9) to keep; ``None`` keeps all.
    split
        ``None`` (``x`` = full image, 64 pixels), ``'quadrant'`` (16 -> 48)
        or ``'half'`` (32 -> 32).

    Returns
    -------
    DataBundle
        Pixels scaled to [0, 1] (raw values / 16), float32; ``labels`` int64;
        ``image_shape`` ``(8, 8)``.
    """
    classes = _check_classes(classes)
    split = _check_split(split)
    images, target = bundled_digits()
    images, labels = _keep_classes(images, target, classes, "'digits'")
    spec = {"name": "digits", "paired": split is not None, "classes": classes, "split": split}
    return _image_bundle("digits", images / 16.0, labels, split, {"classes": classes, "spec": spec})


def _find_idx(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_mnist(
    directory: str | Path = "data/mnist",
    *,
    subset: str = "train",
    classes: Iterable[int] | None = None,
    split: str | None = None,
    limit: int | None = None,
) -> DataBundle:
    """MNIST from local IDX files (never downloaded).

    Parameters
    ----------
    directory
        Folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each plain
        or with a ``.gz`` suffix).
    subset
        ``'train'`` or ``'test'``.
    classes
        Digit labels (0..9) to keep; ``None`` keeps all.
    split
        ``None`` (``x`` = full image, 784 pixels), ``'quadrant'`` (196 -> 588)
        or ``'half'`` (392 -> 392).
    limit
        Keep only the first ``limit`` images (after the class filter).

    Returns
    -------
    DataBundle
        Pixels scaled to [0, 1] (raw values / 255), float32; ``labels`` int64.
        ``attrs["spec"]`` records ``directory`` as an absolute path, so the
        bundle can be rebuilt from any working directory.

    Raises
    ------
    FileNotFoundError
        If the files for ``subset`` are not in ``directory``.
    """
    subset = check_choice("subset", subset, MNIST_FILES)
    classes = _check_classes(classes)
    split = _check_split(split)
    limit = None if limit is None else check_int_range("limit", limit, low=1)
    directory = Path(directory).expanduser().resolve()

    paths = [_find_idx(directory, stem) for stem in MNIST_FILES[subset]]
    if any(path is None for path in paths):
        expected = " and ".join(MNIST_FILES[subset])
        raise FileNotFoundError(
            f"MNIST {subset} files not found in directory {str(directory)!r}: expected {expected} "
            "(plain or .gz). Nothing is downloaded; place the IDX files there yourself "
            "(see data/README.md), or use the bundled 'digits' data set."
        )
    images, labels = (read_idx(path) for path in paths)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"MNIST {subset} files disagree: images {images.shape} (need (n, H, W)) and labels {labels.shape}"
        )
    images, labels = _keep_classes(images, labels, classes, f"MNIST {subset} in {str(directory)!r}")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]

    spec = {
        "name": "mnist",
        "paired": split is not None,
        "directory": str(directory),
        "subset": subset,
        "classes": classes,
        "split": split,
        "limit": limit,
    }
    attrs = {"subset": subset, "classes": classes, "limit": limit, "spec": spec}
    # Scale in float32: float64 would need ~0.4 GB for the 60,000 training images.
    return _image_bundle("mnist", images.astype(np.float32) / np.float32(255.0), labels, split, attrs)
