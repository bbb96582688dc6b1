"""One writer per output location: the claim, its error, and reclaiming a dead owner's lock."""

import json
import os
import subprocess
import sys
import time

import pytest

from ppl_vae._lock import (LOCK_NAME, LinkedOutputError, OutputInUseError, check_name_length, claim_output,
                            enclosing_claim, lock_path)

HOLD = """
import sys, time
from ppl_vae._lock import claim_output
with claim_output(sys.argv[1], "ppl-vae test-holder"):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path):
    """A separate live process holding the claim on ``tmp_path / 'out'``."""
    target = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    yield target, process
    process.kill()
    process.wait()


def test_a_second_claim_in_the_same_process_is_refused(tmp_path):
    with claim_output(tmp_path / "run", "ppl-vae train"):
        with pytest.raises(OutputInUseError, match=rf"run is in use by ppl-vae train \(pid {os.getpid()}"):
            with claim_output(tmp_path / "run", "ppl-vae sweep"):
                pass
    with claim_output(tmp_path / "run", "ppl-vae sweep"):  # released: free again
        pass


def test_a_live_owner_in_another_process_is_named(holder):
    target, process = holder
    with pytest.raises(OutputInUseError) as caught:
        with claim_output(target, "ppl-vae train"):
            pass
    message = str(caught.value)
    assert f"pid {process.pid}" in message and "ppl-vae test-holder" in message and "\n" not in message


def test_the_lock_of_a_killed_owner_is_reclaimed(holder):
    target, process = holder
    process.kill()  # like kill -9: the lock file stays behind
    process.wait()
    assert (target / LOCK_NAME).is_file()
    with claim_output(target, "ppl-vae train"):
        record = json.loads((target / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and record["command"] == "ppl-vae train"


def test_a_lock_file_naming_a_dead_pid_is_reclaimed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "run"
    target.mkdir()
    (target / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "command": "ppl-vae train", "started": time.time()}))
    with claim_output(target, "ppl-vae train"):
        assert json.loads((target / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_the_claim_leaves_nothing_behind(tmp_path):
    with claim_output(tmp_path / "new", "ppl-vae train"):
        assert (tmp_path / "new").is_dir()
    assert not (tmp_path / "new").exists()  # created by the claim and left empty
    kept = tmp_path / "kept"
    with claim_output(kept, "ppl-vae train"):
        (kept / "config.json").write_text("{}")
    assert [p.name for p in kept.iterdir()] == ["config.json"]


def test_a_file_is_claimed_beside_itself(tmp_path):
    page = tmp_path / "reports" / "page.html"
    with claim_output(page, "ppl-vae report", directory=False):
        assert lock_path(page, directory=False).is_file()
        with pytest.raises(OutputInUseError, match="page.html is in use by ppl-vae report"):
            with claim_output(page, "ppl-vae report", directory=False):
                pass
    assert not (tmp_path / "reports").exists()  # made by the claim, left empty: removed


# --- links and nesting (issue 23) ----------------------------------------------------------------------------


def test_a_lock_file_that_is_a_link_is_refused_by_name_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).symlink_to(victim)
    with pytest.raises(LinkedOutputError, match=rf"lock file .*{LOCK_NAME} is a symbolic link"):
        with claim_output(run, "ppl-vae train"):
            pass
    assert victim.read_text() == "mine\n" and (run / LOCK_NAME).is_symlink()  # neither followed nor removed
    (tmp_path / ".page.html.lock").symlink_to(tmp_path / "missing")  # a dangling link is refused too
    with pytest.raises(LinkedOutputError, match=r"\.page\.html\.lock"):
        with claim_output(tmp_path / "page.html", "ppl-vae report", directory=False):
            pass
    assert not (tmp_path / "missing").exists()


def test_a_lock_file_with_another_hard_link_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    run = tmp_path / "run"
    run.mkdir()
    os.link(victim, run / LOCK_NAME)
    with pytest.raises(LinkedOutputError, match="other hard links"):
        with claim_output(run, "ppl-vae train"):
            pass
    assert victim.read_text() == "mine\n"


def test_an_output_that_is_a_link_is_refused_by_name(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").symlink_to(elsewhere)
    with pytest.raises(LinkedOutputError, match="out is a symbolic link"):
        with claim_output(tmp_path / "out", "ppl-vae train"):
            pass
    assert list(elsewhere.iterdir()) == []


def test_a_folder_inside_a_claimed_folder_is_refused_while_its_owner_lives(holder):
    target, process = holder
    inner = target / "runs" / "mine"
    with pytest.raises(OutputInUseError, match=rf"mine is inside .*out, which is in use by .*pid {process.pid}"):
        with claim_output(inner, "training"):
            pass
    with pytest.raises(OutputInUseError, match="is inside"):  # a file in it too
        with claim_output(target / "page.html", "ppl-vae report", directory=False):
            pass
    assert not inner.exists()
    process.kill()
    process.wait()
    with claim_output(inner, "training"):  # the owner is gone: free
        pass


def test_the_owner_may_claim_inside_its_own_folder(tmp_path):
    with claim_output(tmp_path / "sweep", "ppl-vae sweep"):
        with claim_output(tmp_path / "sweep" / "groups" / "g1", "training"):  # a sweep's own group checkpoint
            assert enclosing_claim(tmp_path / "sweep" / "groups" / "g1") is None


def test_names_too_long_for_the_file_system_are_refused_before_any_work(tmp_path):
    with pytest.raises(OSError, match="more than the 255"):
        check_name_length(tmp_path / ("r" * 256))
    with pytest.raises(OSError, match="more than the 255"):  # the lock beside a file adds 6 bytes
        with claim_output(tmp_path / ("p" * 250), "ppl-vae report", directory=False):
            pass
    check_name_length(tmp_path / ("r" * 255))
