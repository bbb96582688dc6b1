"""Atomic writes: the user's umask, no silent replacement, files named in errors, cleared runs."""

import os
import stat

import pytest

from ppl_vae._io import (RunDirectoryExistsError, atomic_write_json, atomic_write_text, check_path,
                         prepare_run_dir, read_json)
from ppl_vae._lock import LOCK_NAME


@pytest.fixture
def umask():
    """Set the process umask for one test."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_users_umask(tmp_path, umask, mask, mode):
    umask(mask)
    path = atomic_write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_an_exclusive_write_never_replaces_a_file(tmp_path):
    path = tmp_path / "table.csv"
    atomic_write_text(path, "first", exclusive=True)
    with pytest.raises(FileExistsError, match="table.csv already exists; pass --overwrite"):
        atomic_write_text(path, "second", exclusive=True)
    assert path.read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]


@pytest.mark.parametrize("empty", ["", "  "])
def test_empty_paths_are_refused_not_taken_as_the_current_directory(empty):
    with pytest.raises(ValueError, match="must not be empty"):
        check_path(empty)
    with pytest.raises(ValueError, match="must not be empty"):
        prepare_run_dir(empty, overwrite=True)


def test_broken_json_is_named(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"final_loss": 1.0,')
    with pytest.raises(ValueError, match=r"metrics.json is not valid JSON \(line 1"):
        read_json(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="metrics.json is not valid JSON"):
        read_json(path)


def test_overwrite_clears_the_old_run_before_anything_new_is_written(tmp_path):
    run = tmp_path / "run"
    for name in ("config.json", "checkpoint.pt", "metrics.json"):
        atomic_write_json(run / name, {})
    (run / LOCK_NAME).write_text("")
    prepare_run_dir(run, overwrite=True, layout=("config.json", "checkpoint.pt", "metrics.json"))
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]


def test_overwrite_refuses_a_folder_that_holds_more_than_a_run(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "thesis.tex").write_text("mine")
    with pytest.raises(RunDirectoryExistsError, match=r"not part of a ppl-vae run \(thesis.tex\)"):
        prepare_run_dir(tmp_path, overwrite=True, layout=("config.json",))
    assert (tmp_path / "config.json").read_text() == "{}"


def test_the_hint_names_only_options_the_command_has(tmp_path):
    (tmp_path / "x").write_text("")
    with pytest.raises(RunDirectoryExistsError) as caught:
        prepare_run_dir(tmp_path, hint="pass --overwrite to reuse it")
    assert "--resume" not in str(caught.value) and "--overwrite" in str(caught.value)


def test_an_atomic_write_never_follows_or_replaces_a_link(tmp_path):
    from ppl_vae._lock import LinkedOutputError

    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    (tmp_path / "metrics.json").symlink_to(victim)
    for exclusive in (False, True):
        with pytest.raises(LinkedOutputError, match="metrics.json is a symbolic link"):
            atomic_write_text(tmp_path / "metrics.json", "{}", exclusive=exclusive)
    assert victim.read_text() == "mine\n" and (tmp_path / "metrics.json").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "victim.txt"]  # no temporary left


def test_overwrite_refuses_a_run_file_that_is_a_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.json").symlink_to(victim)
    with pytest.raises(RunDirectoryExistsError, match="metrics.json"):
        prepare_run_dir(run, overwrite=True, layout=("config.json", "metrics.json"))
    assert victim.read_text() == "mine\n" and (run / "config.json").is_file()
