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
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner

from hostile_inputs import (  # noqa: F401  (the table below names them)
    TRAIN, SWEEP, VICTIM_TEXT, HOLD, make_fixtures, _copy, report_of, resume_of, _json_edit, _with, _state_edit,
    _drop, _reshape_first, _nan_weights, _raw_file, _missing, _netcdf, _foreign_loss, _nc_model_config_list,
    _other_checkpoint, _sweep_json, _sweep_damaged_outputs, _sweep_overwrite_foreign, _sweep_data_changed,
    _sweep_run_damaged_checkpoint, _damaged_group, _long_sweep_names, _linked_sweep_run, _nested_train, _HOLDERS,
    release_holders, _victim, _lock_link_report, _lock_link_resume, _lock_link_bench, _output_link_report,
    _run_file_link_report, _out_dir_link, _npy_header, _npz_header, _npz_bomb, _wide_file, _long_name, _args, _main,
)


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
