"""The user's own data from .npz / .npy / .csv / netCDF files and xarray Datasets."""

import pathlib

import numpy as np
import pytest
import torch
import xarray as xr

from ppl_vae.data import DataFileError, load


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(30, 5)), "y": rng.normal(size=(30, 3)), "digit": rng.integers(0, 4, 30)}


def test_npz_pairs_with_labels_and_a_spec_that_rebuilds_them(arrays, tmp_path):
    path = tmp_path / "pairs.npz"
    np.savez(path, **arrays)
    bundle = load(path, paired=True, x_key="x", y_key="y", label_key="digit")
    assert bundle.x.dtype == torch.float32 and bundle.x.shape == (30, 5) and bundle.y.shape == (30, 3)
    np.testing.assert_allclose(bundle.x.numpy(), arrays["x"].astype(np.float32))
    np.testing.assert_array_equal(bundle.labels.numpy(), arrays["digit"])
    spec = bundle.attrs["spec"]
    assert spec["name"] == str(path.resolve()) and spec["y_key"] == "y" and len(spec["sha256"]) == 64
    again = load(**spec)
    assert torch.equal(again.x, bundle.x) and torch.equal(again.y, bundle.y)
    np.savez(path, **{**arrays, "x": arrays["x"] + 1})
    with pytest.raises(DataFileError, match="has changed since"):
        load(**spec)


def test_npz_with_one_array_needs_no_key_and_several_need_one(arrays, tmp_path):
    np.savez(tmp_path / "one.npz", data=arrays["x"])
    assert load(tmp_path / "one.npz").x.shape == (30, 5)
    np.savez(tmp_path / "many.npz", **arrays)
    with pytest.raises(DataFileError, match=r"many.npz: name the array of x with x_key .*'x', 'y', 'digit'"):
        load(tmp_path / "many.npz")
    with pytest.raises(DataFileError, match="no array 'z' for x"):
        load(tmp_path / "many.npz", x_key="z")


def test_netcdf_and_in_memory_dataset_keep_image_shape(tmp_path):
    images = np.random.default_rng(1).random((12, 4, 4))
    dataset = xr.Dataset({"pixels": (("sample", "row", "col"), images), "label": ("sample", np.arange(12) % 3)})
    path = tmp_path / "images.nc"
    dataset.to_netcdf(path)
    bundle = load(str(path), x_key="pixels", label_key="label")
    assert bundle.x.shape == (12, 16) and bundle.image_shape == (4, 4)
    np.testing.assert_allclose(bundle.x.numpy(), images.reshape(12, 16).astype(np.float32))
    in_memory = load(dataset, x_key="pixels")
    assert torch.equal(in_memory.x, bundle.x) and "cannot be reloaded" in in_memory.attrs["spec"]["name"]


def test_csv_columns_by_name_and_the_rest_as_x(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("a,b,c,d\n1,2,3,4\n5,6,7,8\n9,10,11,12\n")
    bundle = load(path, paired=True, y_key="d")
    np.testing.assert_array_equal(bundle.x.numpy(), [[1, 2, 3], [5, 6, 7], [9, 10, 11]])
    np.testing.assert_array_equal(bundle.y.numpy(), [[4], [8], [12]])
    picked = load(path, paired=True, x_key="a,c", y_key="1:2")
    np.testing.assert_array_equal(picked.x.numpy()[:, 1], [3, 7, 11])
    np.testing.assert_array_equal(picked.y.numpy()[:, 0], [2, 6, 10])
    with pytest.raises(DataFileError, match="no column 'e'; the columns are a, b, c, d"):
        load(path, x_key="e")
    path.write_text("a,b\n1,x\n2,y\n")
    with pytest.raises(DataFileError, match="table.csv: column\\(s\\) 'b' are not numeric"):
        load(path)


def test_npy_is_a_table_of_columns(arrays, tmp_path):
    path = tmp_path / "table.npy"
    np.save(path, np.hstack([arrays["x"], arrays["y"]]))
    bundle = load(path, paired=True, x_key="0:5", y_key="5:8")
    np.testing.assert_allclose(bundle.y.numpy(), arrays["y"].astype(np.float32))


@pytest.mark.parametrize("bad,message", [
    (lambda a: {**a, "x": np.where(np.arange(150).reshape(30, 5) == 17, np.nan, a["x"])},
     r"bad.npz: array 'x' contains 1 NaN or infinite values \(first in row 3\)"),
    (lambda a: {**a, "y": np.full((30, 3), np.inf)}, "array 'y' contains 90 NaN or infinite"),
    (lambda a: {**a, "x": np.array([["a"] * 5] * 30)}, "array 'x' has dtype <U1; numbers"),
    (lambda a: {**a, "y": a["y"][:29]}, "same number of rows.*'x' has 30, 'y' has 29"),
    (lambda a: {**a, "x": np.zeros((0, 5)), "y": np.zeros((0, 3))}, "array 'x' has shape \\(0, 5\\); at least one row"),
    (lambda a: {**a, "x": np.full((30, 5), 1e39)}, "beyond the float32 range"),
    (lambda a: {**a, "x": np.float64(3.0)}, "array 'x' is a scalar"),
])
def test_bad_arrays_are_refused_naming_file_and_array(arrays, tmp_path, bad, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **bad(arrays))
    with pytest.raises(DataFileError, match=message):
        load(path, paired=True, x_key="x", y_key="y")


def test_label_and_pairing_errors(arrays, tmp_path):
    path = tmp_path / "pairs.npz"
    np.savez(path, **{**arrays, "fraction": np.linspace(0, 1, 30)})
    with pytest.raises(DataFileError, match="labels 'fraction' must be integers"):
        load(path, x_key="x", label_key="fraction")
    with pytest.raises(DataFileError, match="paired data \\(CVAE\\) needs y"):
        load(path, paired=True, x_key="x")
    with pytest.raises(DataFileError, match="unpaired data .* reads x only"):
        load(path, x_key="x", y_key="y")
    with pytest.raises(ValueError, match="unknown option\\(s\\) 'classes'"):
        load(path, x_key="x", classes=[1])


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no data file"):
        load(tmp_path / "absent.npz")
    (tmp_path / "notes.txt").write_text("1,2\n")
    with pytest.raises(DataFileError, match="unsupported file type '.txt'"):
        load(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="name must be one of"):
        load("digitz")


class _Planted:
    """Unpickling this object would create a file: a stand-in for code carried by a pickle."""

    marker: pathlib.Path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_object_arrays_are_never_unpickled(tmp_path):
    planted = _Planted()
    planted.marker = tmp_path / "code_ran"
    np.savez(tmp_path / "planted.npz", x=np.array([planted], dtype=object))
    np.save(tmp_path / "planted.npy", np.array([planted], dtype=object))
    for name in ("planted.npz", "planted.npy"):
        with pytest.raises(DataFileError, match="object arrays are not read"):
            load(tmp_path / name)
    assert not planted.marker.exists()


# --- flat images, name ranges, label-like columns -------------------------------------------------------------


def _pixel_csv(path: pathlib.Path, images: np.ndarray, labels: np.ndarray, label_name: str = "label") -> list[str]:
    names = [f"p{r}{c}" for r in range(images.shape[1]) for c in range(images.shape[2])]
    rows = [",".join([*map(str, image.reshape(-1)), str(label)]) for image, label in zip(images, labels)]
    path.write_text(",".join([*names, label_name]) + "\n" + "\n".join(rows) + "\n")
    return names


def test_name_ranges_include_both_ends_and_position_ranges_are_half_open(tmp_path):
    images = np.random.default_rng(2).integers(0, 17, size=(10, 4, 4))
    path = tmp_path / "digits.csv"
    names = _pixel_csv(path, images, np.arange(10) % 3)
    by_name = load(path, x_key="p00:p33", label_key="label")
    by_position = load(path, x_key="0:16", label_key="label")
    assert by_name.x.shape == (10, 16) and torch.equal(by_name.x, by_position.x)
    assert load(path, x_key="p10:p13", label_key="label").x.shape == (10, 4)
    assert names[4:8] == ["p10", "p11", "p12", "p13"]
    with pytest.raises(DataFileError, match=r"range 'p00:zz'.*'zz' is neither a column name nor a position"):
        load(path, x_key="p00:zz", label_key="label")


def test_a_label_like_column_is_never_silently_a_feature(tmp_path):
    images = np.random.default_rng(3).integers(0, 17, size=(10, 2, 2))
    path = tmp_path / "table.csv"
    _pixel_csv(path, images, np.arange(10) % 3, label_name="Target")
    with pytest.raises(DataFileError, match=r"column 'Target' looks like class labels .*--label-key Target"):
        load(path)
    with_labels = load(path, label_key="Target")
    assert with_labels.x.shape == (10, 4) and with_labels.labels.tolist() == (np.arange(10) % 3).tolist()
    assert load(path, x_key="0:4").x.shape == (10, 4)  # x named explicitly: the user chose the columns


def test_image_shape_for_flat_rows_is_checked_and_recorded_in_the_spec(tmp_path):
    images = np.random.default_rng(4).random((6, 2, 3))
    np.save(tmp_path / "flat.npy", images.reshape(6, 6))
    bundle = load(tmp_path / "flat.npy", image_shape="2x3")
    assert bundle.image_shape == (2, 3) and bundle.attrs["spec"]["image_shape"] == [2, 3]
    assert load(**bundle.attrs["spec"]).image_shape == (2, 3)
    with pytest.raises(DataFileError, match=r"image_shape 3x3 needs 9 values per row of x, got 6"):
        load(tmp_path / "flat.npy", image_shape=(3, 3))
    with pytest.raises(DataFileError, match=r"image_shape must be HxW with two positive integers"):
        load(tmp_path / "flat.npy", image_shape="2 by 3")


def test_image_shape_of_pairs_follows_the_split(tmp_path):
    from ppl_vae.data.images import join_split, split_images

    images = np.random.default_rng(5).random((8, 4, 4))
    x, y = split_images(images, "quadrant")
    np.savez(tmp_path / "pairs.npz", x=x.reshape(8, -1), y=y.reshape(8, -1))
    bundle = load(tmp_path / "pairs.npz", paired=True, x_key="x", y_key="y", image_shape="4x4")
    assert bundle.image_shape == (4, 4) and bundle.split == "quadrant"
    np.testing.assert_allclose(join_split(bundle.x.numpy(), bundle.y.numpy(), (4, 4), "quadrant"), images, rtol=1e-6)
    with pytest.raises(DataFileError, match=r"a 'half' split of 4x4 images has x of 8 and y of 8 values"):
        load(tmp_path / "pairs.npz", paired=True, x_key="x", y_key="y", image_shape="4x4", split="half")
