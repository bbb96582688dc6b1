"""Bundled digits, local MNIST IDX files, and CVAE image splits."""

import gzip
import struct

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sklearn_digits

from ppl_vae.data import QUADRANT_ORDER, join_split, load_digits, load_mnist, read_idx, split_images

# ------------------------------------------------------------------- IDX fixture

IDX_TYPE_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B,
                  np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}  # fmt: skip


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` in the IDX format (big-endian header and payload)."""
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, IDX_TYPE_CODES[big_endian.dtype], array.ndim])
    header += b"".join(struct.pack(">I", size) for size in array.shape)
    return header + big_endian.tobytes()


def write_idx(path, array, compressed):
    payload = idx_bytes(array)
    if compressed:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


TINY_SHAPE = (4, 6)  # not square, to catch height/width mix-ups


@pytest.fixture(params=[False, True], ids=["plain", "gz"])
def mnist_dir(request, tmp_path):
    """A tiny fake MNIST folder: 12 train and 5 test images of 4 x 6 pixels."""
    rng = np.random.default_rng(0)
    contents = {}
    for prefix, n in (("train", 12), ("t10k", 5)):
        images = rng.integers(0, 256, size=(n, *TINY_SHAPE), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", images, request.param)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels, request.param)
        contents[prefix] = (images, labels)
    return tmp_path, contents


# ---------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
@pytest.mark.parametrize("compressed", [False, True])
def test_read_idx_round_trips_every_type(tmp_path, dtype, compressed):
    offset = 0 if dtype == "u1" else -5  # signed types get negative entries too
    array = (np.arange(24).reshape(2, 3, 4) + offset).astype(dtype)
    path = write_idx(tmp_path / "array-idx3", array, compressed)
    read = read_idx(path)
    assert read.shape == array.shape
    assert read.dtype.kind == np.dtype(dtype).kind and read.dtype.itemsize == np.dtype(dtype).itemsize
    assert read.dtype.isnative
    np.testing.assert_array_equal(read, array)


def test_read_idx_reads_fixture_files(mnist_dir):
    directory, contents = mnist_dir
    suffix = ".gz" if (directory / "train-images-idx3-ubyte.gz").exists() else ""
    images = read_idx(directory / f"train-images-idx3-ubyte{suffix}")
    labels = read_idx(directory / f"train-labels-idx1-ubyte{suffix}")
    np.testing.assert_array_equal(images, contents["train"][0])
    np.testing.assert_array_equal(labels, contents["train"][1])


def test_read_idx_rejects_bad_magic(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


def test_read_idx_rejects_unknown_type(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="type code"):
        read_idx(path)


def test_read_idx_rejects_truncated_payload(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(idx_bytes(np.zeros((3, 2), dtype=np.uint8))[:-1])
    with pytest.raises(ValueError, match="payload"):
        read_idx(path)


# ---------------------------------------------------------------------- load_mnist


@pytest.mark.parametrize("subset, prefix", [("train", "train"), ("test", "t10k")])
def test_load_mnist_full_images(mnist_dir, subset, prefix):
    directory, contents = mnist_dir
    images, labels = contents[prefix]
    bundle = load_mnist(directory, subset=subset)
    assert bundle.name == "mnist"
    assert bundle.x.dtype == torch.float32 and bundle.labels.dtype == torch.int64
    assert bundle.y is None and bundle.split is None
    assert bundle.image_shape == TINY_SHAPE
    np.testing.assert_allclose(bundle.x.numpy(), images.reshape(len(images), -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(bundle.labels.numpy(), labels)


def test_load_mnist_quadrant_split_class_filter_and_limit(mnist_dir):
    directory, contents = mnist_dir
    images, labels = contents["train"]
    bundle = load_mnist(directory, classes=[1, 3], split="quadrant", limit=3)
    keep = np.isin(labels, [1, 3])
    expected = images[keep][:3] / 255.0
    assert bundle.x.shape == (3, 6) and bundle.y.shape == (3, 18)
    assert set(bundle.labels.tolist()) <= {1, 3}
    rebuilt = join_split(bundle.x, bundle.y, bundle.image_shape, bundle.split)
    np.testing.assert_allclose(rebuilt.numpy(), expected, rtol=1e-6)


def test_load_mnist_half_split(mnist_dir):
    directory, _ = mnist_dir
    bundle = load_mnist(directory, split="half")
    assert bundle.x.shape == (12, 12) and bundle.y.shape == (12, 12)
    assert bundle.split == "half"


def test_load_mnist_missing_files_explains_and_downloads_nothing(tmp_path):
    empty = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as error:
        load_mnist(empty)
    message = str(error.value)
    assert str(empty) in message
    assert "train-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message
    assert "download" in message.lower()
    assert not empty.exists()


def test_load_mnist_missing_labels_is_reported(mnist_dir):
    directory, _ = mnist_dir
    for path in directory.glob("t10k-labels-idx1-ubyte*"):
        path.unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_mnist(directory, subset="test")


@pytest.mark.parametrize(
    "kwargs",
    [{"subset": "validation"}, {"split": "thirds"}, {"limit": 0}, {"classes": [10]}, {"classes": []}],
)
def test_load_mnist_rejects_bad_arguments(mnist_dir, kwargs):
    directory, _ = mnist_dir
    with pytest.raises(ValueError):
        load_mnist(directory, **kwargs)


def test_load_mnist_class_absent_from_files(mnist_dir):
    directory, _ = mnist_dir
    with pytest.raises(ValueError, match="select no images"):
        load_mnist(directory, subset="test", classes=[9])  # the 5 test labels are 0..4


# ------------------------------------------------------------------------ digits


@pytest.fixture(scope="module")
def digits_images():
    return sklearn_digits().images


def test_digits_full_images(digits_images):
    bundle = load_digits()
    assert bundle.name == "digits"
    assert bundle.x.shape == (1797, 64) and bundle.x.dtype == torch.float32
    assert bundle.y is None and bundle.split is None
    assert bundle.image_shape == (8, 8)
    assert bundle.labels.shape == (1797,) and bundle.labels.dtype == torch.int64
    assert float(bundle.x.min()) == 0.0 and float(bundle.x.max()) == 1.0
    np.testing.assert_allclose(bundle.x.numpy(), digits_images.reshape(1797, 64) / 16.0)


@pytest.mark.parametrize("split, x_dim, y_dim", [("quadrant", 16, 48), ("half", 32, 32)])
def test_digits_split_shapes_and_range(split, x_dim, y_dim):
    bundle = load_digits(split=split)
    assert bundle.x.shape == (1797, x_dim) and bundle.y.shape == (1797, y_dim)
    assert bundle.split == split and bundle.is_paired
    for part in (bundle.x, bundle.y):
        assert float(part.min()) >= 0.0 and float(part.max()) <= 1.0


@pytest.mark.parametrize("split", ["quadrant", "half", None])
def test_digits_join_split_restores_images(digits_images, split):
    bundle = load_digits(split=split)
    images = join_split(bundle.x, bundle.y, bundle.image_shape, split)
    assert images.shape == (1797, 8, 8)
    np.testing.assert_allclose(images.numpy(), digits_images / 16.0, rtol=1e-6)


def test_digits_class_filter():
    labels = sklearn_digits().target
    bundle = load_digits(classes=(7, 2, 7), split="quadrant")
    assert set(bundle.labels.tolist()) == {2, 7}
    assert bundle.n == int(np.sum(np.isin(labels, [2, 7])))
    assert bundle.attrs["classes"] == [2, 7]


@pytest.mark.parametrize("classes", [[10], [-1], ["3"], [], "37", [2.5]])
def test_digits_rejects_bad_classes(classes):
    with pytest.raises(ValueError, match="classes"):
        load_digits(classes=classes)


def test_digits_rejects_bad_split():
    with pytest.raises(ValueError, match="quadrant"):
        load_digits(split="quarter")


# ------------------------------------------------------------------------ splits


def quadrant_coded_images(n=2, height=4, width=6):
    """Images whose pixels say which quadrant they sit in (1 TL, 2 TR, 3 BL, 4 BR)."""
    h, w = height // 2, width // 2
    image = np.zeros((height, width))
    image[:h, :w], image[:h, w:], image[h:, :w], image[h:, w:] = 1, 2, 3, 4
    return np.repeat(image[None], n, axis=0), h * w


def test_quadrant_layout_is_documented_order():
    assert QUADRANT_ORDER == ("top-left", "top-right", "bottom-right")
    images, size = quadrant_coded_images()
    x, y = split_images(images, "quadrant")
    assert np.all(x == 3)  # bottom-left
    np.testing.assert_array_equal(y[0], np.repeat([1.0, 2.0, 4.0], size))


def test_quadrant_pieces_are_row_major():
    images = np.arange(2 * 4 * 6, dtype=float).reshape(2, 4, 6)
    x, y = split_images(images, "quadrant")
    np.testing.assert_array_equal(x[0], images[0, 2:, :3].ravel())
    np.testing.assert_array_equal(y[0, :6], images[0, :2, :3].ravel())
    np.testing.assert_array_equal(y[0, 6:12], images[0, :2, 3:].ravel())
    np.testing.assert_array_equal(y[0, 12:], images[0, 2:, 3:].ravel())


def test_half_layout():
    images = np.arange(2 * 4 * 6, dtype=float).reshape(2, 4, 6)
    x, y = split_images(images, "half")
    np.testing.assert_array_equal(x[1], images[1, :, :3].ravel())
    np.testing.assert_array_equal(y[1], images[1, :, 3:].ravel())


@pytest.mark.parametrize("split", ["quadrant", "half", None])
@pytest.mark.parametrize("as_torch", [False, True])
def test_join_split_is_exact_inverse(split, as_torch):
    images = np.random.default_rng(0).random((3, 6, 4))
    if as_torch:
        images = torch.from_numpy(images)
    x, y = split_images(images, split)
    rebuilt = join_split(x, y, (6, 4), split)
    assert type(rebuilt) is type(images)
    assert tuple(rebuilt.shape) == (3, 6, 4)
    assert (rebuilt == images).all()


def test_split_rejects_odd_or_flat_images():
    with pytest.raises(ValueError, match="even"):
        split_images(np.zeros((2, 5, 4)), "quadrant")
    with pytest.raises(ValueError, match="shape"):
        split_images(np.zeros((2, 16)), "half")


def test_join_split_rejects_mismatched_pieces():
    x, y = split_images(np.zeros((2, 4, 4)), "quadrant")
    with pytest.raises(ValueError, match="shape"):
        join_split(x, y[:, :-1], (4, 4), "quadrant")
    with pytest.raises(ValueError, match="y"):
        join_split(x, None, (4, 4), "half")


def test_bundled_digits_are_exactly_what_sklearn_load_digits_gives(monkeypatch):
    from sklearn.datasets import load_digits as sklearn_digits

    from ppl_vae.data import images as images_module

    reference = sklearn_digits()
    pixels, labels = images_module.bundled_digits()
    np.testing.assert_array_equal(pixels, reference.images)
    np.testing.assert_array_equal(labels, reference.target)
    # where scikit-learn keeps its data elsewhere, its own loader is used
    monkeypatch.setattr(images_module.importlib.util, "find_spec", lambda name: None)
    fallback_pixels, fallback_labels = images_module.bundled_digits()
    np.testing.assert_array_equal(fallback_pixels, reference.images)
    np.testing.assert_array_equal(fallback_labels, reference.target)
