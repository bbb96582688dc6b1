"""Bad input through every command: one ``Error:`` line naming the file, key or option; never a traceback.

Each case builds its bad input in a fresh folder (from one tiny trained run and
one tiny sweep made once per module), runs the command line in process, and
checks the exit status (2: a bad option or spec, 1: a bad file or a refused
output), the words of the message, and that nothing was written where the case
says nothing may be.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ppl_vae.cli import main

TRAIN = ["--data", "synthetic", "--n-samples", "80", "--dim", "4", "--latent-dim", "2", "--steps", "5",
         "--device", "cpu", "--no-progress"]
SWEEP = ["--data", "synthetic", "--n-samples", "60", "--dim", "4", "--latent-dim", "2", "--steps", "3",
         "--iw-samples", "2", "--device", "cpu", "--quiet"]
MNIST = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One finished train run and one finished sweep, copied by the cases that change them."""
    root = tmp_path_factory.mktemp("made")
    runner = CliRunner()
    trained = runner.invoke(main, ["train", "--model", "vae", *TRAIN, "--out", str(root / "run")])
    swept = runner.invoke(main, ["sweep", *SWEEP, "--beta", "1,2", "--out", str(root / "sweep")])
    assert trained.exit_code == 0 and swept.exit_code == 0, trained.output + swept.output
    return root


def _copy(made: Path, tmp: Path, name: str) -> Path:
    return Path(shutil.copytree(made / name, tmp / name))


def _damage_checkpoint(how: str) -> Callable[[Path, Path], list[str]]:
    def prepare(made, tmp):
        run = _copy(made, tmp, "run")
        path = run / "checkpoint.pt"
        data = path.read_bytes()
        path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": os.urandom(2048)}[how])
        return ["train", "--out", str(run), "--resume", "--steps", "9", "--no-progress"]
    return prepare


def _planted_checkpoint(made, tmp):
    run = _copy(made, tmp, "run")
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["payload"] = _Planted()
    torch.save(state, run / "checkpoint.pt")
    return ["report", str(run), "--out", str(tmp / "r.html"), "--iw-samples", "2", "--no-progress"]


class _Planted:
    def __reduce__(self):
        return (os.system, ("touch PLANTED_CODE_RAN",))


def _broken_json(name: str, command: str) -> Callable[[Path, Path], list[str]]:
    def prepare(made, tmp):
        if command == "train":
            run = _copy(made, tmp, "run")
            (run / name).write_text('{"model": {')
            return ["train", "--out", str(run), "--resume", "--steps", "9", "--no-progress"]
        sweep = _copy(made, tmp, "sweep")
        target = sweep / name if name == "spec.json" else sweep / "runs" / "beta=1" / name
        target.write_text("{]")
        return ["sweep", *SWEEP, "--beta", "1,2", "--out", str(sweep)]
    return prepare


def _edited_config(made, tmp):
    run = _copy(made, tmp, "run")
    config = json.loads((run / "config.json").read_text())
    config["model"]["latent_dim"] = 3
    (run / "config.json").write_text(json.dumps(config))
    return ["report", str(run), "--out", str(tmp / "r.html"), "--iw-samples", "2", "--no-progress"]


def _broken_loss_history(made, tmp):
    run = _copy(made, tmp, "run")
    (run / "loss_history.nc").write_bytes(b"CDF\x01 cut short")
    return ["report", str(run), "--out", str(tmp / "r.html"), "--iw-samples", "2", "--no-progress"]


def _mnist(how: str) -> Callable[[Path, Path], list[str]]:
    def prepare(made, tmp):
        folder = tmp / "mnist"
        folder.mkdir()
        for stem in MNIST:
            packed = gzip.compress(b"\x00\x00\x08\x03" + bytes(64))
            (folder / f"{stem}.gz").write_bytes(packed[: len(packed) // 2] if how == "truncated" else b"not gzip")
        return ["train", "--model", "vae", "--data", "mnist", "--mnist-dir", str(folder), "--steps", "1",
                "--out", str(tmp / "out")]
    return prepare


def _spec(text: str, suffix: str = ".yaml") -> Callable[[Path, Path], list[str]]:
    def prepare(made, tmp):
        spec = tmp / f"spec{suffix}"
        spec.write_text(text)
        return ["sweep", "--spec", str(spec), "--out", str(tmp / "out")]
    return prepare


BASE_SPEC = "data: {name: synthetic, n: 60, dim: 4}\nmodel_options: {latent_dim: 2}\ngrid: {beta: [1]}\n"


def _args(*args: str) -> Callable[[Path, Path], list[str]]:
    return lambda made, tmp: [arg.replace("TMP", str(tmp)) for arg in args]


def _read_only(made, tmp):
    folder = tmp / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    return ["train", "--model", "vae", *TRAIN, "--out", str(folder / "run")]


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    prepare: Callable[[Path, Path], list[str]]
    exit_code: int | tuple[int, ...]
    words: tuple[str, ...]
    untouched: str | None = "out"  # a path under tmp that must not exist afterwards


CASES = [
    Case("empty checkpoint", _damage_checkpoint("empty"), 1, ("checkpoint.pt is empty",), None),
    Case("truncated checkpoint", _damage_checkpoint("truncated"), 1, ("checkpoint.pt", "truncated or corrupted"),
         None),
    Case("corrupted checkpoint", _damage_checkpoint("garbage"), 1, ("checkpoint.pt", "truncated or corrupted"), None),
    Case("code-carrying checkpoint", _planted_checkpoint, 1, ("checkpoint.pt", "refused unread"), "r.html"),
    Case("broken config.json on resume", _broken_json("config.json", "train"), 1,
         ("config.json is not valid JSON (line 1",), None),
    Case("broken spec.json of a sweep", _broken_json("spec.json", "sweep"), 1, ("spec.json is not valid JSON",), None),
    Case("broken metrics.json of a sweep run", _broken_json("metrics.json", "sweep"), 1,
         ("beta=1/metrics.json is not valid JSON",), None),
    Case("broken loss_history.nc", _broken_loss_history, 1, ("loss_history.nc cannot be read",), "r.html"),
    Case("config.json edited after training", _edited_config, 1,
         ("config.json does not match", "checkpoint.pt", "latent_dim"), "r.html"),
    # The loader reports content it rejects as a bad value (2), a file it cannot read as a bad file (1).
    Case("MNIST .gz that is not gzip", _mnist("garbage"), (1, 2), ("TMP/mnist",), "out"),
    Case("truncated MNIST .gz", _mnist("truncated"), (1, 2), ("TMP/mnist",), "out"),
    Case("MNIST missing in sweep", _args("sweep", "--data", "mnist", "--beta", "1", "--steps", "1", "--out",
                                         "TMP/out"), 1, ("MNIST", "data/mnist"), "out"),
    Case("malformed YAML spec", _spec("grid: {beta: [1, 2\ntrain: {steps: 1}\n"), 2,
         ("spec.yaml is not valid YAML (line",), "out"),
    Case("malformed TOML spec", _spec("grid = {beta = [1,\n", ".toml"), 2, ("spec.toml is not valid TOML",), "out"),
    Case("unknown optimizer in a spec", _spec(BASE_SPEC + "train: {steps: 1, optimizer: sgd}\n"), 2,
         ("train['optimizer']", "sgd"), "out"),
    Case("lr_decay above 1 in a spec", _spec(BASE_SPEC + "train: {steps: 1, lr_decay: 2}\n"), 2,
         ("train['lr_decay']",), "out"),
    Case("negative clip_norm in a spec", _spec(BASE_SPEC + "train: {steps: 1, clip_norm: -1}\n"), 2,
         ("train['clip_norm']",), "out"),
    Case("unknown device in a spec", _spec(BASE_SPEC + "train: {steps: 1}\nexecution: {device: gpu}\n"), 2,
         ("execution['device']", "gpu"), "out"),
    Case("unknown device option of sweep", _args("sweep", *SWEEP, "--device", "tpu", "--beta", "1", "--out",
                                                 "TMP/out"), 2, ("execution['device']", "tpu"), "out"),
    Case("grid of a million configurations", _args("sweep", *SWEEP, "--beta", "1", "--seeds", "0-999999", "--out",
                                                   "TMP/out"), 2, ("1,000,000 configurations", "--yes"), "out"),
    Case("run names that collide", _args("sweep", *SWEEP, "--beta", "1,1.0", "--out", "TMP/out"), 2,
         ("grid['beta']", "values repeat"), "out"),
    Case("empty --out of train", _args("train", *TRAIN, "--out", ""), 2, ("--out", "must not be empty"), None),
    Case("empty --out of sweep", _args("sweep", *SWEEP, "--beta", "1", "--out", ""), 2, ("--out", "must not be empty"),
         None),
    Case("empty --out of report", _args("report", "TMP", "--out", ""), 2, ("--out", "must not be empty"), None),
    Case("empty --out of bench", _args("bench", "--out", ""), 2, ("--out", "must not be empty"), None),
    Case("empty --out of reproduce", _args("reproduce", "--tiny", "--out", ""), 2, ("--out", "must not be empty"),
         None),
    Case("read-only output folder", _read_only, 1, ("Permission denied", "locked"), None),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_clear_line(case, made, tmp_path, monkeypatch):
    if case.name == "read-only output folder" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders (the simulated case below covers it)")
    monkeypatch.chdir(tmp_path)
    args = case.prepare(made, tmp_path)
    result = CliRunner().invoke(main, args)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code in (case.exit_code if isinstance(case.exit_code, tuple) else (case.exit_code,)), \
        result.output
    assert len(errors) == 1 and "Traceback" not in result.output and "Aborted" not in result.output, result.output
    for word in case.words:
        assert word.replace("TMP", str(tmp_path)) in errors[0], errors[0]
    if case.untouched is not None:
        assert not (tmp_path / case.untouched).exists()
    assert not (tmp_path / "PLANTED_CODE_RAN").exists()


def test_a_read_only_file_system_is_one_line_naming_the_path(tmp_path, monkeypatch):
    import errno

    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if "readonly" in str(self):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    result = CliRunner().invoke(main, ["train", "--model", "vae", *TRAIN, "--out", str(tmp_path / "readonly" / "r")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Error: [Errno 30] Read-only file system: '{tmp_path / 'readonly'}" in result.output


def test_an_unexpected_end_of_input_is_not_a_bare_aborted(monkeypatch, tmp_path):
    import ppl_vae.cli.train as train

    def ends_early(*args, **kwargs):
        raise EOFError("Ran out of input")

    monkeypatch.setattr(train, "load_data", ends_early)
    result = CliRunner().invoke(main, ["train", "--model", "vae", *TRAIN, "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and result.output.strip() == "Error: Ran out of input"


def test_a_damaged_diagnostics_cache_is_recomputed_not_an_error(made, tmp_path):
    run = _copy(made, tmp_path, "run")
    (run / "diagnostics.nc").write_bytes(b"CDF\x01 cut short")
    result = CliRunner().invoke(main, ["report", str(run), "--out", str(tmp_path / "r.html"), "--iw-samples", "2",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    from ppl_vae.diagnostics import load

    assert load(run / "diagnostics.nc").attrs["iw_samples"] == 2
