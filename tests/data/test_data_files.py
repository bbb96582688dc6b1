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
