"""Two writers, one output: the second is refused by name and nothing is mixed.

Each test starts a real ``ppl-vae`` process (A), waits until it holds its
output, runs a second command (B) into the same place, then kills A as
``kill -9`` would and checks what is left: A's files only, consistent with each
other, and a lock that the next command reclaims.
"""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from ppl_vae._lock import LOCK_NAME
from ppl_vae.cli import main

TRAIN = ["train", "--model", "vae", "--data", "synthetic", "--n-samples", "60", "--dim", "4", "--latent-dim", "2",
         "--lr", "0.01", "--device", "cpu", "--no-progress"]
SWEEP = ["sweep", "--data", "synthetic", "--n-samples", "60", "--dim", "4", "--latent-dim", "2", "--iw-samples", "2",
         "--device", "cpu", "--quiet"]


def _start(args):
    """A ``ppl-vae`` process running ``args``."""
    return subprocess.Popen([sys.executable, "-c", "from ppl_vae.cli import main; main()", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(path, process, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.is_file():
        if process.poll() is not None:
            pytest.fail(f"the first writer ended early: {process.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path} did not appear")
        time.sleep(0.05)


@pytest.fixture
def killed_at_the_end():
    started = []
    yield started.append
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()


def _one_error_line(output):
    lines = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_two_trains_into_one_new_out(tmp_path, killed_at_the_end):
    out = tmp_path / "run"
    first = _start([*TRAIN, "--beta", "2", "--steps", "1000000", "--checkpoint-every", "20", "--out", str(out)])
    killed_at_the_end(first)
    _wait_for(out / "checkpoint.pt", first)

    second = CliRunner().invoke(main, [*TRAIN, "--beta", "3", "--steps", "5", "--out", str(out)])
    assert second.exit_code == 1
    assert f"{out} is in use by training (pid {first.pid}" in _one_error_line(second.output)

    first.send_signal(signal.SIGKILL)  # kill -9: the lock file stays behind
    first.wait()
    assert (out / LOCK_NAME).is_file()
    config = json.loads((out / "config.json").read_text())
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert config["model"]["beta"] == 2.0 and state["configs"] == [config["model"]]  # A's files only

    again = CliRunner().invoke(main, [*TRAIN, "--beta", "3", "--steps", "5", "--out", str(out)])
    assert again.exit_code == 1 and "already exists" in _one_error_line(again.output)
    resumed = CliRunner().invoke(main, ["train", "--out", str(out), "--resume", "--steps", str(state["step"] + 5),
                                        "--no-progress"])
    assert resumed.exit_code == 0, resumed.output  # the dead owner's lock is reclaimed
    assert not (out / LOCK_NAME).exists()


def test_two_sweeps_with_different_specs_into_one_dir(tmp_path, killed_at_the_end):
    out = tmp_path / "sweep"
    first = _start([*SWEEP, "--beta", "0.5,1", "--steps", "1000000", "--out", str(out)])
    killed_at_the_end(first)
    _wait_for(out / "spec.json", first)
    identity = json.loads((out / "spec.json").read_text())["identity"]

    second = CliRunner().invoke(main, [*SWEEP, "--beta", "2,4", "--steps", "5", "--out", str(out)])
    assert second.exit_code == 1
    assert f"{out} is in use by ppl-vae sweep (pid {first.pid}" in _one_error_line(second.output)

    first.send_signal(signal.SIGKILL)
    first.wait()
    assert json.loads((out / "spec.json").read_text())["identity"] == identity
    assert not (out / "runs").exists() or not any((out / "runs").iterdir())  # nothing of B's, no half of A's
    again = CliRunner().invoke(main, [*SWEEP, "--beta", "2,4", "--steps", "5", "--out", str(out)])
    assert again.exit_code == 1 and "different spec" in _one_error_line(again.output)


HOLD = """
import sys, time
from ppl_vae._lock import claim_output
with claim_output(sys.argv[1], "training", directory=sys.argv[2] == "dir"):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("command", ["report", "bench", "reproduce"])
def test_report_bench_and_reproduce_refuse_an_output_someone_holds(tmp_path, killed_at_the_end, command):
    run = tmp_path / "run"
    trained = CliRunner().invoke(main, [*TRAIN, "--steps", "3", "--out", str(run)])
    assert trained.exit_code == 0, trained.output
    held, kind, args = {
        "report": (run, "dir", ["report", str(run), "--out", str(tmp_path / "r.html"), "--no-progress"]),
        "bench": (tmp_path / "b.csv", "file", ["bench", "--quick", "--out", str(tmp_path / "b.csv")]),
        "reproduce": (tmp_path / "results", "dir", ["reproduce", "--tiny", "--out", str(tmp_path / "results")]),
    }[command]
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(held), kind], stdout=subprocess.PIPE, text=True)
    killed_at_the_end(holder)
    assert holder.stdout.readline().strip() == "held"
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert f"{held} is in use by training (pid {holder.pid}" in _one_error_line(result.output)
