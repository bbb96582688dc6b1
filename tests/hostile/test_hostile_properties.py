"""Property-based (Hypothesis) tests of hostile input: data files, spec files, run records and command-line values.

Each property says what must hold for EVERY input of a class, so that the next
kind of bad file is found here rather than by a user: a data file either loads
as finite float32 rows or is refused with a ``ValueError`` naming it; a spec
either validates or is refused with a ``ValueError``; a command line value ends
in exit status 0, 1 or 2 with no traceback. Example counts are bounded and
deadlines off so the suite stays fast on a loaded machine.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ppl_vae._io import DamagedFileError
from ppl_vae._validate import check_finite_values, count_range
from ppl_vae.data import load
from ppl_vae.data.holdout import check_split, split_sizes
from ppl_vae.inference.checkpoint import CheckpointError, check_state

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Array dtypes a user's file may hold: numbers of every kind, complex included.
DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_,
                          np.complex64, np.complex128])
ARRAYS = DTYPES.flatmap(lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, max_side=6)))


_BASE: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def _scratch(tmp_path_factory):
    """One scratch folder for the module (Hypothesis runs each test many times: no function-scoped tmp_path)."""
    _BASE.append(tmp_path_factory.mktemp("hypothesis"))
    yield
    _BASE.pop()


def _folder() -> Path:
    return Path(tempfile.mkdtemp(dir=_BASE[-1]))


def _loaded_or_refused(path: Path):
    """The bundle, or None when the file was refused with an error naming it (any other exception fails)."""
    try:
        return load(str(path))
    except (ValueError, OSError) as err:  # DataFileError and DamagedFileError are ValueErrors
        assert path.name in str(err), err
        return None


@FAST
@given(ARRAYS, st.sampled_from([".npy", ".npz"]))
def test_any_array_file_loads_as_finite_float32_rows_or_is_refused_by_name(values, suffix):
    path = _folder() / f"data{suffix}"
    if suffix == ".npy":
        np.save(path, values)
    else:
        np.savez(path, x=values)
    bundle = _loaded_or_refused(path)
    if bundle is None:
        return
    assert values.dtype.kind in "biuf"  # complex never loads
    assert bundle.x.dtype == torch.float32 and bool(torch.isfinite(bundle.x).all())
    assert bundle.n == (values.shape[0] if values.ndim else 1)


@FAST
@given(st.binary(max_size=400), st.sampled_from([".npy", ".npz", ".csv", ".nc"]))
def test_any_bytes_under_a_data_suffix_load_or_are_refused_by_name(content, suffix):
    path = _folder() / f"data{suffix}"
    path.write_bytes(content)
    bundle = _loaded_or_refused(path)
    if bundle is not None:
        assert bool(torch.isfinite(bundle.x).all())


@FAST
@given(st.lists(st.lists(st.sampled_from(["1", "2.5", "-3", "nan", "inf", "", "x", "1e400", "(1+2j)"]),
                         min_size=2, max_size=2), min_size=1, max_size=5))
def test_any_csv_table_loads_finite_or_is_refused_by_name(rows):
    path = _folder() / "table.csv"
    path.write_text("a,b\n" + "\n".join(",".join(row) for row in rows) + "\n")
    bundle = _loaded_or_refused(path)
    if bundle is not None:
        assert bool(torch.isfinite(bundle.x).all())
        assert bundle.n == len(rows)


@FAST
@given(st.tuples(st.integers(1, 10**12), st.integers(1, 10**4)), st.sampled_from(["<f4", "<f8", "<c16", "|u1"]))
def test_a_npy_header_is_checked_against_the_budget_before_reading(shape, descr):
    path = _folder() / "claimed.npy"
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": descr, "fortran_order": False, "shape": shape})
        handle.write(bytes(64))
    declared = math.prod(shape) * np.dtype(descr).itemsize
    if declared <= 64 and descr != "<c16":  # the 64 bytes written hold it: a valid (small) array
        assert _loaded_or_refused(path) is not None
        return
    with pytest.raises(ValueError, match="claimed.npy"):  # too big, truncated or complex: refused by name
        load(str(path))
    if declared > 1 << 40:
        with pytest.raises(ValueError, match="memory budget"):
            load(str(path))


# --------------------------------------------------------------------------- spec files and run records

SCALARS = st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8)
JSON = st.recursive(SCALARS,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=3),
                    max_leaves=12)
SECTIONS = ("model", "arch", "data", "model_options", "grid", "train", "diagnostics", "execution")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(SECTIONS), JSON, max_size=6))
def test_any_spec_mapping_validates_or_is_refused_with_a_value_error(raw):
    from ppl_vae.sweep.spec import SweepSpec

    try:
        spec = SweepSpec.from_dict(raw)
    except ValueError:
        return
    assert spec.n_configs >= 1


@FAST
@given(st.text(max_size=40))
def test_any_text_of_a_yaml_spec_file_validates_or_is_refused_with_a_value_error(text):
    from ppl_vae.sweep.spec import load_spec

    path = _folder() / "spec.yaml"
    path.write_text(text)
    try:
        load_spec(path)
    except ValueError:
        pass


@FAST
@given(JSON)
def test_any_spec_json_record_is_a_sweep_record_or_refused_naming_the_file(saved):
    from ppl_vae._provenance import saved_sweep

    try:
        record = saved_sweep(Path("sweep/spec.json"), saved)
    except DamagedFileError as err:
        assert "sweep/spec.json" in str(err)
        return
    assert isinstance(record["identity"], dict) and isinstance(record["grid_order"], list)


@FAST
@given(st.dictionaries(st.sampled_from(["model_state", "step", "stopped", "configs", "train", "x"]), JSON,
                       max_size=5))
def test_any_checkpoint_content_is_checked_or_refused_naming_the_file(state):
    try:
        step = check_state(state, "run/checkpoint.pt")
    except CheckpointError as err:
        assert "run/checkpoint.pt" in str(err)
        return
    assert isinstance(step, int) and step >= 0


# --------------------------------------------------------------------------- values


@FAST
@given(st.text(alphabet="0123456789-,. e", max_size=30))
def test_any_grid_value_text_parses_or_is_refused_at_once(text):
    from ppl_vae.sweep.spec import parse_values

    try:
        values = parse_values("seed", text)
    except ValueError as err:
        assert "grid['seed']" in str(err)
        return
    assert 1 <= len(values) <= 1_000_000 * max(text.count(","), 1) + text.count(",") + 1


@FAST
@given(st.integers(0, 10**15), st.integers(0, 10**15))
def test_ranges_are_counted_before_they_are_expanded(first, last):
    if last - first + 1 > 1_000_000:
        with pytest.raises(ValueError, match="more than"):
            count_range("grid['seed']", first, last)
    else:
        assert count_range("grid['seed']", first, last) == last - first + 1


@FAST
@given(st.integers(2, 10_000), st.floats(0.0, 1.0, exclude_max=True))
def test_a_split_leaves_rows_on_both_sides_or_is_refused(n, fraction):
    try:
        n_train, n_test = check_split(n, fraction)
    except ValueError as err:
        assert "test_fraction" in str(err)
        n_train, n_test = split_sizes(n, fraction)  # the API clips instead
        assert n_train >= 1 and n_test >= 1
        return
    assert n_train + n_test == n and n_train >= 1 and (n_test >= 1 or fraction == 0.0)


@FAST
@given(hnp.arrays(st.sampled_from([np.float32, np.float64, np.complex64]), hnp.array_shapes(max_dims=2, max_side=5),
                  elements=st.floats(allow_nan=True, allow_infinity=True, width=32)))
def test_nan_and_complex_are_refused_never_skipped(values):
    bad = values.dtype.kind == "c" or not np.isfinite(values).all()
    for given_values in (values, torch.from_numpy(values)):
        if bad:
            with pytest.raises(ValueError, match="data x"):
                check_finite_values("data x", given_values)
        else:
            check_finite_values("data x", given_values)


@settings(max_examples=15, deadline=None)
@given(st.text(alphabet="0123456789.,-eE nai", min_size=0, max_size=12))
def test_any_beta_value_of_the_theory_command_ends_in_one_line_or_a_result(text):
    from ppl_vae.cli import main

    result = CliRunner().invoke(main, ["theory", "--model", "vae", "--data", "synthetic", "--n-samples", "30",
                                       "--dim", "4", "--latent-dim", "2", "--beta", text])
    assert not (result.exception and not isinstance(result.exception, SystemExit)), (text, result.output)
    assert result.exit_code in (0, 1, 2)
    if result.exit_code:
        assert sum(line.startswith("Error:") for line in result.output.splitlines()) == 1, result.output


@settings(max_examples=10, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 200))
def test_any_test_fraction_and_size_of_train_ends_in_one_line_or_a_run(fraction, n):
    from ppl_vae.cli import main

    out = _folder() / "run"
    result = CliRunner().invoke(main, ["train", "--model", "vae", "--data", "synthetic", "--n-samples", str(n),
                                       "--dim", "3", "--latent-dim", "1", "--steps", "1", "--no-progress",
                                       "--test-fraction", repr(fraction), "--out", str(out)])
    assert not (result.exception and not isinstance(result.exception, SystemExit)), (fraction, n, result.output)
    assert result.exit_code in (0, 1, 2)
    if result.exit_code:
        assert sum(line.startswith("Error:") for line in result.output.splitlines()) == 1, result.output
        assert not (out / "checkpoint.pt").exists()
    else:
        assert json.loads((out / "config.json").read_text())["train"]["test_fraction"] == fraction
