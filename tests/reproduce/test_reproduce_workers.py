"""A reproduce job's experiments side by side in worker processes: same results, crashes contained, cores shared."""

from __future__ import annotations

import json
import os
import textwrap

import pytest
import torch

from ppl_vae.reproduce import EXPERIMENTS, Settings, run_experiments
from ppl_vae.reproduce.settings import image_batch_threads, use_cores
from ppl_vae.reproduce.workers import default_jobs, expected_steps

#: Records what its process was given (threads, cores, the process id) and agrees.
RECORDING = textwrap.dedent('''
    import os
    import torch
    import pandas as pd
    from ppl_vae.reproduce import ClaimCheck, ExperimentOutput, parse_settings
    from ppl_vae.reproduce.settings import available_cores

    def main(argv=None):
        settings = parse_settings("fake", argv)
        out = ExperimentOutput(settings.out, "{name}", overwrite=settings.overwrite)
        out.table("process", pd.DataFrame({{"threads": [torch.get_num_threads()], "cores": [available_cores()],
                                           "pid": [os.getpid()]}}), "what the process was given")
        check = ClaimCheck("{name}", "fake claim", True, "rule", {{}})
        out.claim(check)
        return check
''')
#: Kills its own process without a word (as a segfault or the memory killer would).
CRASHING = textwrap.dedent('''
    import os

    def main(argv=None):
        os._exit(3)
''')
RAISING = textwrap.dedent('''
    def main(argv=None):
        raise RuntimeError("boom in the script")
''')


def _analyses(tmp_path, scripts: dict[str, str]):
    directory = tmp_path / "analyses"
    directory.mkdir()
    for name, text in scripts.items():
        (directory / f"{name}.py").write_text(text.format(name=name))
    return directory


def _process_table(out, name) -> dict:
    header, values = (out / name / "process.csv").read_text().splitlines()[:2]
    return dict(zip(header.split(","), map(int, values.split(","))))


def test_workers_report_in_the_papers_order_and_contain_a_crash(tmp_path):
    first, second, third, fourth = list(EXPERIMENTS)[:4]
    directory = _analyses(tmp_path, {first: RECORDING, second: CRASHING, third: RAISING, fourth: RECORDING})
    settings = Settings("tiny", tmp_path / "out")
    outcomes = run_experiments(settings, [fourth, third, second, first], analyses_dir=directory, progress=False,
                               jobs=2)
    assert [o.name for o in outcomes] == [first, second, third, fourth]
    assert [o.status for o in outcomes] == ["agrees", "failed", "failed", "agrees"]
    assert "worker process died (exit code 3)" in outcomes[1].error  # the crash is this experiment's alone
    assert "boom in the script" in outcomes[2].error
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [e["status"] for e in summary["experiments"]] == ["agrees", "failed", "failed", "agrees"]
    # each experiment ran in a fresh process of its own, none in the job's
    pids = {_process_table(tmp_path / "out", name)["pid"] for name in (first, fourth)}
    assert len(pids) == 2 and not pids & {os.getpid()}


def test_each_worker_gets_its_share_of_the_threads(tmp_path):
    first, second = list(EXPERIMENTS)[:2]
    directory = _analyses(tmp_path, {first: RECORDING, second: RECORDING})
    previous = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        run_experiments(Settings("tiny", tmp_path / "out"), [first, second], analyses_dir=directory,
                        progress=False, jobs=2)
    finally:
        torch.set_num_threads(previous)
    for name in (first, second):
        assert _process_table(tmp_path / "out", name) | {"pid": 0} == {"threads": 2, "cores": 2, "pid": 0}


def test_a_resumed_parallel_job_reruns_only_what_did_not_finish(tmp_path):
    first, second = list(EXPERIMENTS)[:2]
    directory = _analyses(tmp_path, {first: RECORDING, second: CRASHING})
    settings = Settings("tiny", tmp_path / "out")
    run_experiments(settings, [first, second], analyses_dir=directory, progress=False, jobs=2)
    kept = _process_table(tmp_path / "out", first)["pid"]
    (directory / f"{second}.py").write_text(RECORDING.format(name=second))
    outcomes = run_experiments(settings, [first, second], analyses_dir=directory, progress=False, jobs=2,
                               resume=True)
    assert [o.status for o in outcomes] == ["agrees"] * 2
    assert outcomes[0].seconds == 0.0 and _process_table(tmp_path / "out", first)["pid"] == kept


def test_jobs_is_checked(tmp_path):
    with pytest.raises(ValueError, match="jobs"):
        run_experiments(Settings("tiny", tmp_path / "out"), ["theorem_checks"], progress=False, jobs=0)
    assert not (tmp_path / "out").exists()


def test_default_jobs_one_per_core_except_full_scale():
    assert default_jobs(Settings("quick", "x")) == default_jobs(Settings("tiny", "x")) >= 1
    assert default_jobs(Settings("full", "x")) == 1


def test_longest_first_reads_the_declared_plans(tmp_path):
    """Sequential steps from each script's plan; a script without a plan counts as the longest (it starts first)."""
    first, second = list(EXPERIMENTS)[:2]
    planned = RECORDING + textwrap.dedent('''
        from ppl_vae.reproduce.plan import RunPlan

        def plan(settings):
            return [RunPlan("a", 3, 2, 100), RunPlan("b", 4, 2, 50, vectorised=False)]
    ''')
    directory = _analyses(tmp_path, {first: planned, second: RECORDING})
    assert expected_steps(Settings("tiny", "x"), [first, second], directory) == {first: 100 + 8 * 50,
                                                                               second: float("inf")}


def test_a_workers_share_caps_the_image_runs_threads(monkeypatch):
    from ppl_vae.reproduce import settings as settings_module

    monkeypatch.setattr(settings_module, "_CORES", None)  # restored after the test
    use_cores(1)
    with image_batch_threads(Settings("quick", "x")):
        assert torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="count"):
        use_cores(0)


def test_real_experiments_give_the_same_claims_side_by_side_as_one_after_another(tmp_path):
    names = ["cvae_linear_quadrant_beta", "correlation_levels"]
    claims = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        outcomes = run_experiments(Settings("tiny", out, device="cpu"), names, progress=False, jobs=jobs)
        assert all(o.status != "failed" for o in outcomes), [o.error for o in outcomes]
        claims[jobs] = {name: json.loads((out / name / "claim.json").read_text()) for name in names}
    assert claims[1] == claims[2]
