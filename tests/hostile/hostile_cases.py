"""The hostile-input case table: damaged, foreign, linked and oversized inputs, and what each must end in.

Every case prepares its input in a fresh folder (copying one tiny trained run
and one tiny sweep made once), runs one command in process (or calls the API),
and gets one verdict:

- ``clear error``: exit status 1 or 2, exactly one ``Error:`` line holding the
  case's words, no traceback (API: an exception of the expected type whose
  message holds the words);
- ``handled``: the case expects success (a damaged cache recomputed) and got it;
- ``traceback``: an exception escaped;
- ``unclear error``: refused, but not in one line naming what the case names;
- ``silent wrong``: exit 0 (or a returned value) where a refusal was due;
- ``data lost``: a file the case says must survive (or a planted link's
  target) was changed or removed, whatever the exit status.

``test_hostile_cases.py`` asserts every verdict is the expected one;
``python tests/hostile/hostile_cases.py`` prints the counts per verdict (the
figures in docs/reliability.md, taken against the code on ``PYTHONPATH``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner

TRAIN = ["--data", "synthetic", "--n-samples", "80", "--dim", "4", "--latent-dim", "2", "--steps", "5",
         "--device", "cpu", "--no-progress"]
SWEEP = ["--data", "synthetic", "--n-samples", "60", "--dim", "4", "--latent-dim", "2", "--steps", "3",
         "--iw-samples", "2", "--device", "cpu", "--quiet"]
VICTIM_TEXT = "the user's own file\n"

HOLD = """
import sys, time
from ppl_vae._lock import claim_output
with claim_output(sys.argv[1], "ppl-vae sweep"):
    print("held", flush=True)
    time.sleep(120)
"""


def make_fixtures(root: Path) -> Path:
    """One finished train run (reported once, so it holds diagnostics.nc), a second run and a finished sweep."""
    from ppl_vae.cli import main

    runner = CliRunner()
    for argv in (["train", "--model", "vae", *TRAIN, "--out", str(root / "run")],
                 ["train", "--model", "vae", *TRAIN, "--seed", "7", "--out", str(root / "other")],
                 ["report", str(root / "run"), "--out", str(root / "first.html"), "--iw-samples", "2",
                  "--no-progress"],
                 ["sweep", *SWEEP, "--beta", "1,2", "--out", str(root / "sweep")]):
        result = runner.invoke(main, argv)
        assert result.exit_code == 0, (argv, result.output)
    rng = np.random.default_rng(0)
    np.savez(root / "data.npz", x=rng.normal(size=(60, 4)).astype(np.float32))
    return root


# --------------------------------------------------------------------------- preparing the inputs


def _copy(made: Path, tmp: Path, name: str) -> Path:
    return Path(shutil.copytree(made / name, tmp / name, symlinks=True))


def report_of(run: Path, tmp: Path, *extra: str) -> list[str]:
    return ["report", str(run), "--out", str(tmp / "r.html"), "--iw-samples", "2", "--no-progress", *extra]


def resume_of(run: Path) -> list[str]:
    return ["train", "--out", str(run), "--resume", "--steps", "9", "--no-progress"]


def _json_edit(name: str, edit: Callable[[object], object] | str, command: str):
    """Replace a run's JSON file with ``edit(content)`` (or raw text) and run ``command`` on the run."""
    def prepare(made, tmp):
        run = _copy(made, tmp, "run")
        path = run / name
        if isinstance(edit, str):
            path.write_text(edit)
        else:
            path.write_text(json.dumps(edit(json.loads(path.read_text()))))
        return report_of(run, tmp) if command == "report" else resume_of(run)
    return prepare


def _with(key_path: tuple[str, ...], value):
    def edit(content):
        target = content
        for key in key_path[:-1]:
            target = target[key]
        target[key_path[-1]] = value
        return content
    return edit


def _state_edit(edit: Callable[[dict], object], command: str):
    """Replace the run's checkpoint with ``edit(state)`` (saved with torch.save) and run ``command``."""
    def prepare(made, tmp):
        run = _copy(made, tmp, "run")
        path = run / "checkpoint.pt"
        state = torch.load(path, weights_only=True)
        torch.save(edit(state), path)
        return report_of(run, tmp) if command == "report" else resume_of(run)
    return prepare


def _drop(key):
    def edit(state):
        del state[key]
        return state
    return edit


def _reshape_first(state):
    name = next(iter(state["model_state"]))
    state["model_state"][name] = torch.zeros(3, 3, 3)
    return state


def _nan_weights(state):
    for value in state["model_state"].values():
        value.fill_(float("nan"))
    return state


def _raw_file(name: str, content: bytes | Callable[[bytes], bytes], command: str):
    def prepare(made, tmp):
        run = _copy(made, tmp, "run")
        path = run / name
        old = path.read_bytes() if path.exists() else b""
        path.write_bytes(content(old) if callable(content) else content)
        return report_of(run, tmp) if command == "report" else resume_of(run)
    return prepare


def _missing(name: str, command: str):
    def prepare(made, tmp):
        run = _copy(made, tmp, "run")
        (run / name).unlink()
        return report_of(run, tmp) if command == "report" else resume_of(run)
    return prepare


def _netcdf(name: str, dataset_of: Callable[[Path], object], command: str = "report"):
    def prepare(made, tmp):
        run = _copy(made, tmp, "run")
        dataset = dataset_of(run)
        (run / name).unlink()
        dataset.to_netcdf(run / name)
        return report_of(run, tmp) if command == "report" else resume_of(run)
    return prepare


def _foreign_loss(run):
    import xarray as xr

    return xr.Dataset({"foo": ("t", np.arange(3.0))})


def _nc_model_config_list(made, tmp):
    import xarray as xr

    source = made / "run" / "diagnostics.nc"
    target = tmp / "evil.nc"
    shutil.copy(source, target)
    with xr.open_dataset(target) as root:
        attrs = dict(root.attrs)
    import netCDF4

    with netCDF4.Dataset(target, "a") as handle:
        for key in attrs:
            if "config" in key:
                handle.setncattr(key, "[1, 2]")
    return ["report", str(target), "--out", str(tmp / "r.html"), "--no-progress"]


def _other_checkpoint(made, tmp):
    run = _copy(made, tmp, "run")
    shutil.copy(made / "other" / "checkpoint.pt", run / "checkpoint.pt")
    (run / "diagnostics.nc").unlink()
    return report_of(run, tmp)


# --- sweeps


def _sweep_json(target: str, text: str):
    def prepare(made, tmp):
        sweep = _copy(made, tmp, "sweep")
        (sweep / target).write_text(text)
        return ["sweep", *SWEEP, "--beta", "1,2", "--out", str(sweep)]
    return prepare


def _sweep_damaged_outputs(made, tmp):
    sweep = _copy(made, tmp, "sweep")
    (sweep / "summary.json").write_text("[")
    (sweep / "combined.nc").write_bytes(b"CDF\x01 cut")
    return ["sweep", *SWEEP, "--beta", "1,2", "--out", str(sweep)]


def _sweep_overwrite_foreign(made, tmp):
    sweep = _copy(made, tmp, "sweep")
    (sweep / "runs" / "notes.md").write_text(VICTIM_TEXT)
    (sweep / "runs" / "my_extra_run").mkdir()
    (sweep / "runs" / "my_extra_run" / "keep.txt").write_text(VICTIM_TEXT)
    return ["sweep", *SWEEP, "--beta", "3", "--overwrite", "--out", str(sweep)]


def _sweep_data_changed(made, tmp):
    data = tmp / "data.npz"
    shutil.copy(made / "data.npz", data)
    argv = ["sweep", "--model", "vae", *SWEEP[6:], "--data", str(data), "--beta", "1,2", "--out", str(tmp / "sw")]
    first = CliRunner().invoke(_main(), argv)
    assert first.exit_code == 0, first.output
    shutil.rmtree(tmp / "sw" / "runs" / "beta=2")  # one run to do again ...
    rng = np.random.default_rng(1)
    np.savez(data, x=rng.normal(size=(60, 4)).astype(np.float32))  # ... on other data
    return argv


def _sweep_run_damaged_checkpoint(made, tmp):
    sweep = _copy(made, tmp, "sweep")
    run = sweep / "runs" / "beta=1"
    (run / "diagnostics.nc").unlink()
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    torch.save(_reshape_first(state), run / "checkpoint.pt")
    return ["sweep", *SWEEP, "--beta", "1,2", "--out", str(sweep)]


def _damaged_group(made, tmp):
    from ppl_vae.sweep.api import plan_tasks
    from ppl_vae.sweep.study import TRAIN_DEFAULTS, group_id, read_spec

    sweep = _copy(made, tmp, "sweep")
    shutil.rmtree(sweep / "runs" / "beta=2")  # interrupted: beta=2 is still to train, from its group checkpoint
    spec = read_spec(sweep)
    configs, seeds, _ = spec.expand(spec.load_data())
    fit_options = {key: spec.train[key] for key in TRAIN_DEFAULTS} | {"device": spec.execution["device"]}
    for task in plan_tasks(configs, seeds, fit_options, index=[1], group_size=spec.execution["group_size"],
                           vectorise=spec.execution["vectorise"]):
        folder = sweep / "groups" / group_id(task)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"models": [c.to_dict() for c in task.configs],
                                                        "seeds": list(task.seeds)}))
        (folder / "checkpoint.pt").write_bytes(b"PK\x03\x04 damaged")
    return ["sweep", *SWEEP, "--beta", "1,2", "--out", str(sweep)]


def _long_sweep_names(made, tmp):
    spec = tmp / "spec.yaml"
    spec.write_text("model: vae\narch: mlp\ndata: {name: synthetic, n: 60, dim: 4}\nmodel_options: {latent_dim: 2}\n"
                    f"grid: {{hidden_dims: [[{', '.join(['8'] * 130)}]]}}\ntrain: {{steps: 1}}\n")
    return ["sweep", "--spec", str(spec), "--out", str(tmp / "out")]


def _linked_sweep_run(made, tmp):
    sweep = _copy(made, tmp, "sweep")
    shutil.rmtree(sweep / "runs" / "beta=2")
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text(VICTIM_TEXT)
    (sweep / "runs" / "beta=2").symlink_to(elsewhere)
    return ["sweep", *SWEEP, "--beta", "1,2", "--out", str(sweep)]


def _nested_train(made, tmp):
    sweep = _copy(made, tmp, "sweep")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(sweep)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    _HOLDERS.append(holder)
    return ["train", "--model", "vae", *TRAIN, "--out", str(sweep / "runs" / "mine")]


_HOLDERS: list[subprocess.Popen] = []


def release_holders() -> None:
    while _HOLDERS:
        process = _HOLDERS.pop()
        process.kill()
        process.wait()


# --- links


def _victim(tmp: Path) -> Path:
    victim = tmp / "victim.txt"
    victim.write_text(VICTIM_TEXT)
    return victim


def _lock_link_report(made, tmp):
    run = _copy(made, tmp, "run")
    (tmp / ".r.html.lock").symlink_to(_victim(tmp))
    return report_of(run, tmp)


def _lock_link_resume(made, tmp):
    run = _copy(made, tmp, "run")
    (run / ".ppl-vae.lock").symlink_to(_victim(tmp))
    return resume_of(run)


def _lock_link_bench(made, tmp):
    (tmp / "table.csv").write_text("a\n1\n")
    (tmp / ".table.csv.lock").symlink_to(_victim(tmp))
    return ["bench", "--quick", "--out", str(tmp / "table.csv")]


def _output_link_report(made, tmp):
    run = _copy(made, tmp, "run")
    (tmp / "r.html").symlink_to(_victim(tmp))
    return report_of(run, tmp, "--overwrite")


def _run_file_link_report(made, tmp):
    run = _copy(made, tmp, "run")
    (run / "diagnostics.nc").unlink()
    (run / "diagnostics.nc").symlink_to(_victim(tmp))
    return report_of(run, tmp)


def _out_dir_link(made, tmp):
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    (tmp / "out").symlink_to(elsewhere)
    return ["train", "--model", "vae", *TRAIN, "--out", str(tmp / "out")]


# --- sizes and values


def _npy_header(made, tmp):
    path = tmp / "huge.npy"
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (10**11, 10)})
        handle.write(np.zeros(20, np.float32).tobytes())
    return ["train", "--model", "vae", "--data", str(path), "--steps", "1", "--out", str(tmp / "out")]


def _npz_header(made, tmp):
    path = tmp / "huge.npz"
    import zipfile

    with zipfile.ZipFile(path, "w") as archive, archive.open("x.npy", "w") as member:
        np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (10**11, 10)})
        member.write(np.zeros(20, np.float32).tobytes())
    return ["train", "--model", "vae", "--data", str(path), "--steps", "1", "--out", str(tmp / "out")]


def _npz_bomb(made, tmp):
    path = tmp / "bomb.npz"
    np.savez_compressed(path, x=np.zeros((12_500_000, 4), np.float32))  # 200 MB of zeros in ~200 kB
    os.environ["PPL_VAE_MEMORY_BUDGET"] = "64M"
    return ["train", "--model", "vae", "--data", str(path), "--steps", "1", "--out", str(tmp / "out")]


def _wide_file(made, tmp):
    path = tmp / "wide.npy"
    np.save(path, np.random.default_rng(0).normal(size=(20, 500_000)).astype(np.float32))
    return ["train", "--model", "vae", "--arch", "linear", "--data", str(path), "--latent-dim", "2", "--steps", "1",
            "--test-fraction", "0", "--no-progress", "--out", str(tmp / "out")]


def _long_name(made, tmp):
    return ["train", "--model", "vae", *TRAIN, "--out", str(tmp / ("r" * 300))]


def _args(*args: str):
    return lambda made, tmp: [arg.replace("TMP", str(tmp)) for arg in args]


def _main():
    from ppl_vae.cli import main

    return main


# --------------------------------------------------------------------------- API cases


def _api_diagnose_nan(made, tmp):
    from ppl_vae.data import load
    from ppl_vae.diagnostics import diagnose
    from ppl_vae.models import VAEConfig, build_model

    bundle = load("synthetic", n=40, dim=4, seed=0)
    x = bundle.x.clone()
    x[3, 1] = float("nan")
    model = build_model(VAEConfig(input_dim=4, latent_dim=2, arch="linear"))
    return lambda: diagnose(model, x, iw_samples=2, n_obs=5, n_draws=2, kl_samples=2, progress=False)


def _api_theory_complex(made, tmp):
    from ppl_vae.theory import linear_vae

    x = np.random.default_rng(0).normal(size=(30, 4)) * (1 + 1j)
    return lambda: linear_vae(x, 2)


def _api_theory_nan(made, tmp):
    from ppl_vae.theory import linear_vae

    x = np.random.default_rng(0).normal(size=(30, 4))
    x[0, 0] = np.nan
    return lambda: linear_vae(x, 2)


def _api_fit_nan(made, tmp):
    from ppl_vae.data import DataBundle
    from ppl_vae.inference import fit
    from ppl_vae.models import VAEConfig, build_model

    x = torch.randn(40, 4)
    x[5, 2] = float("nan")
    model = build_model(VAEConfig(input_dim=4, latent_dim=2, arch="linear"))
    return lambda: fit(model, DataBundle("nan", x=x), steps=2, progress=False, device="cpu")


def _api_load_complex(made, tmp):
    from ppl_vae.data import load

    np.save(tmp / "c.npy", np.ones((10, 3), dtype=np.complex64))
    return lambda: load(str(tmp / "c.npy"))


def _api_load_nan(made, tmp):
    from ppl_vae.data import load

    x = np.ones((10, 3))
    x[2, 2] = np.nan
    np.savez(tmp / "n.npz", x=x)
    return lambda: load(str(tmp / "n.npz"))


# --------------------------------------------------------------------------- the table


@dataclasses.dataclass(frozen=True)
class Case:
    """One hostile input and what it must end in (see the module docstring)."""

    name: str
    prepare: Callable[[Path, Path], list[str] | Callable[[], object]]
    words: tuple[str, ...] = ()
    expect: str = "clear error"  # or "handled" (success expected), or "either" (success or a clear error)
    keep: tuple[str, ...] = ()  # paths under tmp whose bytes must survive unchanged
    victim: bool = False  # tmp/victim.txt (a planted link's target) must keep its content
    api: bool = False  # prepare returns a callable (the Python API) instead of argv
    creates: str | None = None  # "handled" only if this file under tmp exists afterwards


RESUME_KEEPS = ("run/metrics.json", "run/loss_history.nc", "run/checkpoint.pt")

CASES = [
    # --- every file of a run folder, for report (R) and resume (T)
    Case("R config.json empty", _json_edit("config.json", "", "report"), ("config.json",)),
    Case("T config.json empty", _json_edit("config.json", "", "resume"), ("config.json",), keep=RESUME_KEEPS),
    Case("R config.json truncated", _json_edit("config.json", '{"model": {', "report"), ("config.json",)),
    Case("R config.json a list", _json_edit("config.json", "[]", "report"), ("config.json",)),
    Case("T config.json a list", _json_edit("config.json", "[]", "resume"), ("config.json",), keep=RESUME_KEEPS),
    Case("R config.json {}", _json_edit("config.json", "{}", "report"), ("config.json",)),
    Case("T config.json {}", _json_edit("config.json", "{}", "resume"), ("config.json",), keep=RESUME_KEEPS),
    Case("R config.json data a string", _json_edit("config.json", _with(("data",), "synthetic"), "report"),
         ("config.json", "data")),
    Case("T config.json data a string", _json_edit("config.json", _with(("data",), "synthetic"), "resume"),
         ("config.json", "data"), keep=RESUME_KEEPS),
    Case("R config.json model a list", _json_edit("config.json", _with(("model",), [1, 2]), "report"),
         ("config.json",)),
    Case("R config.json test_fraction edited", _json_edit("config.json", _with(("train", "test_fraction"), 0.5),
                                                          "report"), ("config.json", "test_fraction")),
    Case("R config.json lr edited", _json_edit("config.json", _with(("train", "lr"), 0.5), "report"),
         ("config.json", "lr")),
    Case("R checkpoint of another run", _other_checkpoint, ("config.json", "checkpoint.pt")),
    Case("R checkpoint empty", _raw_file("checkpoint.pt", b"", "report"), ("checkpoint.pt",)),
    Case("T checkpoint empty", _raw_file("checkpoint.pt", b"", "resume"), ("checkpoint.pt",),
         keep=RESUME_KEEPS[:2]),
    Case("T checkpoint truncated", _raw_file("checkpoint.pt", lambda b: b[: len(b) // 2], "resume"),
         ("checkpoint.pt",), keep=RESUME_KEEPS[:2]),
    Case("R checkpoint without step", _state_edit(_drop("step"), "report"), ("checkpoint.pt", "step")),
    Case("T checkpoint without step", _state_edit(_drop("step"), "resume"), ("checkpoint.pt", "step"),
         keep=RESUME_KEEPS[:2]),
    Case("R checkpoint without model_state", _state_edit(_drop("model_state"), "report"),
         ("checkpoint.pt", "model_state")),
    Case("T checkpoint without optimizer_state", _state_edit(_drop("optimizer_state"), "resume"),
         ("checkpoint.pt", "optimizer_state"), keep=RESUME_KEEPS[:2]),
    Case("R checkpoint wrong shapes", _state_edit(_reshape_first, "report"), ("checkpoint.pt",)),
    Case("T checkpoint wrong shapes", _state_edit(_reshape_first, "resume"), ("checkpoint.pt",),
         keep=RESUME_KEEPS[:2]),
    Case("R checkpoint NaN weights", _state_edit(_nan_weights, "report"), ("checkpoint.pt", "NaN")),
    Case("T checkpoint NaN weights", _state_edit(_nan_weights, "resume"), ("checkpoint.pt", "NaN"),
         keep=RESUME_KEEPS[:2]),
    Case("T checkpoint step a string", _state_edit(_with(("step",), "five"), "resume"), ("checkpoint.pt", "step"),
         keep=RESUME_KEEPS[:2]),
    Case("T checkpoint a list", _state_edit(lambda state: [1, 2], "resume"), ("checkpoint.pt",),
         keep=RESUME_KEEPS[:2]),
    Case("R checkpoint missing", _missing("checkpoint.pt", "report"), ("checkpoint.pt",)),
    Case("T checkpoint missing", _missing("checkpoint.pt", "resume"), ("checkpoint.pt",), keep=RESUME_KEEPS[:2]),
    Case("R loss_history.nc empty", _raw_file("loss_history.nc", b"", "report"), ("loss_history.nc",)),
    Case("R loss_history.nc foreign variables", _netcdf("loss_history.nc", _foreign_loss), ("loss_history.nc",)),
    Case("R metrics.json {}", _json_edit("metrics.json", "{}", "report"), ("metrics.json",), expect="either"),
    Case("R metrics.json a list", _json_edit("metrics.json", "[]", "report"), ("metrics.json",), expect="either"),
    Case("R metrics.json truncated", _json_edit("metrics.json", '{"final_loss": ', "report"), ("metrics.json",),
         expect="either"),
    Case("R diagnostics.nc empty (recomputed)", _raw_file("diagnostics.nc", b"", "report"), expect="handled"),
    Case("R a .nc whose model_config is a list", _nc_model_config_list, ("evil.nc",), expect="either"),
    # --- a sweep folder
    Case("S spec.json a list", _sweep_json("spec.json", "[]"), ("spec.json",)),
    Case("S spec.json {}", _sweep_json("spec.json", "{}"), ("spec.json",)),
    Case("S run metrics.json {}", _sweep_json("runs/beta=1/metrics.json", "{}"), ("metrics.json",),
         expect="either"),
    Case("S run checkpoint wrong shapes", _sweep_run_damaged_checkpoint, ("checkpoint.pt",)),
    Case("S run config.json a list", _sweep_json("runs/beta=1/config.json", "[]"), ("config.json",),
         expect="either"),
    Case("S run diagnostics.nc empty (recomputed)", _sweep_json("runs/beta=1/diagnostics.nc", ""),
         expect="handled", creates="sweep/combined.nc"),
    Case("S summary.json and combined.nc damaged (rewritten)", _sweep_damaged_outputs, expect="handled",
         creates="sweep/combined.nc"),
    Case("S --overwrite with the user's files in runs/", _sweep_overwrite_foreign, ("notes.md",),
         keep=("sweep/runs/notes.md", "sweep/runs/my_extra_run/keep.txt")),
    Case("S rerun after its data file changed", _sweep_data_changed, ("data.npz", "changed")),
    Case("S damaged group checkpoint (discarded, retrained)", _damaged_group, expect="handled",
         creates="sweep/runs/beta=2/metrics.json"),
    Case("S run names over 255 bytes", _long_sweep_names, ("255",), keep=()),
    Case("S a run folder that is a link", _linked_sweep_run, ("symbolic link", "beta=2"),
         keep=("elsewhere/keep.txt",)),
    Case("S train into a running sweep's folder", _nested_train, ("in use",),
         keep=("sweep/runs/beta=1/checkpoint.pt",)),
    # --- links
    Case("L report with a planted lock link", _lock_link_report, ("symbolic link", ".r.html.lock"), victim=True),
    Case("L resume with a planted lock link", _lock_link_resume, ("symbolic link", ".ppl-vae.lock"), victim=True),
    Case("L bench --out with a planted lock link", _lock_link_bench, ("symbolic link", ".table.csv.lock"),
         victim=True),
    Case("L report --out that is a link", _output_link_report, ("symbolic link", "r.html"), victim=True),
    Case("L run file that is a link", _run_file_link_report, ("symbolic link", "diagnostics.nc"), victim=True),
    Case("L train --out that is a link", _out_dir_link, ("symbolic link", "out")),
    # --- sizes and values
    Case("Z .npy header claiming 1e11 rows", _npy_header, ("huge.npy", "memory budget")),
    Case("Z .npz member header claiming 1e11 rows", _npz_header, ("huge.npz", "memory budget")),
    Case("Z .npz inflating past the budget", _npz_bomb, ("bomb.npz", "memory budget")),
    Case("Z 20 x 500000 file for a linear model", _wide_file, ("500000", "memory budget")),
    Case("Z --seeds 0-99999999999", _args("sweep", *SWEEP, "--beta", "1", "--seeds", "0-99999999999", "--out",
                                          "TMP/out"), ("0-99999999999",)),
    Case("Z theory grid of 3000 x 3000", _args("theory", "--model", "vae", "--data", "synthetic", "--beta",
                                               ",".join(str(1 + k / 1000) for k in range(3000)), "--eta-dec",
                                               ",".join(str(1 + k / 1000) for k in range(3000))),
         ("9,000,000", "--yes")),
    Case("Z --test-fraction 0.999", _args("train", "--model", "vae", *TRAIN, "--test-fraction", "0.999", "--out",
                                          "TMP/out"), ("--test-fraction", "0.999")),
    Case("Z run name over 255 bytes", _long_name, ("255",)),
    Case("V digits with --n-samples and --dim", _args("train", "--data", "digits", "--n-samples", "50", "--dim",
                                                      "3", "--steps", "1", "--out", "TMP/out"),
         ("--n-samples", "--dim", "digits")),
    # --- the Python API
    Case("A diagnose with a NaN row", _api_diagnose_nan, ("NaN",), api=True),
    Case("A theory with complex data", _api_theory_complex, ("complex",), api=True),
    Case("A theory with NaN data", _api_theory_nan, ("NaN",), api=True),
    Case("A fit with NaN data", _api_fit_nan, ("NaN",), api=True),
    Case("A load of a complex .npy", _api_load_complex, ("c.npy",), api=True),
    Case("A load of a NaN .npz", _api_load_nan, ("n.npz", "NaN"), api=True),
]

#: Cases that hang or exhaust memory on code without the size checks: the tally runs them only with --all.
UNSAFE_BEFORE = {"Z theory grid of 3000 x 3000", "Z .npz inflating past the budget"}


# --------------------------------------------------------------------------- running and judging


def _snapshot(tmp: Path, case: Case) -> dict[str, bytes | None]:
    paths = {rel: tmp / rel for rel in case.keep}
    if case.victim:
        paths["victim.txt"] = tmp / "victim.txt"
    return {rel: (path.read_bytes() if path.is_file() else None) for rel, path in paths.items()}


def run_case(case: Case, made: Path, tmp: Path) -> tuple[str, str]:
    """``(verdict, output)`` of one case run in ``tmp`` (see the module docstring)."""
    budget = os.environ.get("PPL_VAE_MEMORY_BUDGET")
    try:
        prepared = case.prepare(made, tmp)
        before = _snapshot(tmp, case)
        if case.api:
            try:
                value = prepared()
            except (ValueError, TypeError, OSError) as err:
                output, failed, escaped = f"Error: {' '.join(str(err).split())}", True, None
            except Exception as err:  # noqa: BLE001  (the verdict records it)
                output, failed, escaped = f"{type(err).__name__}: {err}", True, err
            else:
                output, failed, escaped = f"returned {type(value).__name__}", False, None
            code = 1 if failed else 0
        else:
            result = CliRunner().invoke(_main(), prepared)
            output, code = result.output, result.exit_code
            escaped = result.exception if not isinstance(result.exception, SystemExit) else None
            if escaped is not None:
                output += f"\n{type(escaped).__name__}: {escaped}"
    finally:
        release_holders()
        if budget is None:
            os.environ.pop("PPL_VAE_MEMORY_BUDGET", None)
        else:
            os.environ["PPL_VAE_MEMORY_BUDGET"] = budget
    after = _snapshot(tmp, case)
    if any(before[rel] is not None and after[rel] != before[rel] for rel in before):
        return "data lost", output
    if escaped is not None:
        return "traceback", output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    if code == 0:
        if case.expect == "clear error":
            return "silent wrong", output
        done = case.expect != "handled" or (all(word in output for word in case.words)
                                            and (case.creates is None or (tmp / case.creates).is_file()))
        return ("handled" if done else "unclear outcome"), output
    if case.expect == "handled":
        return "unclear error", output
    clear = len(errors) == 1 and "Traceback" not in output and all(word in errors[0] for word in case.words)
    return ("clear error" if clear else "unclear error"), output


def expected(case: Case) -> set[str]:
    return {"clear error": {"clear error"}, "handled": {"handled"}, "either": {"clear error", "handled"}}[case.expect]


def _tally(all_cases: bool, only: str | None = None) -> None:
    import tempfile
    from collections import Counter

    counts: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as scratch:
        made = make_fixtures(Path(scratch) / "made")
        for k, case in enumerate(CASES):
            if only is not None and only not in case.name:
                continue
            if case.name in UNSAFE_BEFORE and not all_cases:
                print(f"{case.name:55s} (not run: hangs or exhausts memory without the size checks)")
                counts["not run"] += 1
                continue
            tmp = Path(scratch) / f"case{k}"
            tmp.mkdir()
            cwd = os.getcwd()
            os.chdir(tmp)
            try:
                verdict, output = run_case(case, made, tmp)
            except Exception as err:  # noqa: BLE001  (a case that cannot even be prepared on this code)
                verdict, output = "traceback", f"{type(err).__name__}: {err}"
            finally:
                os.chdir(cwd)
            counts[verdict] += 1
            last = (output.strip().splitlines() or [""])[-1][:110]
            print(f"{case.name:55s} {verdict:14s} {last}")
    print(dict(counts), f"total {sum(counts.values())}")


if __name__ == "__main__":
    _tally("--all" in sys.argv, next((a[3:] for a in sys.argv if a.startswith("-k=")), None))
