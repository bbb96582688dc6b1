"""How the hostile cases stage their inputs: damaged, foreign, linked and oversized files (see hostile_cases.py)."""

from __future__ import annotations

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
