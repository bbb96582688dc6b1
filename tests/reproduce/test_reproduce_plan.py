"""The cost of a reproduce job before it runs: each script's declared plan, the table, the command line."""

from __future__ import annotations

import textwrap

import pytest
from click.testing import CliRunner

from ppl_vae.cli import main as cli
from ppl_vae.reproduce import Settings
from ppl_vae.reproduce.plan import GPU_SECONDS_PER_STEP, RunPlan, describe_plan, plan_experiments

DECLARED = textwrap.dedent('''
    from ppl_vae.reproduce.plan import RunPlan

    def plan(settings):
        return [RunPlan("grid", 4, settings.n_seeds, settings.steps(1, 10, 1000)),
                RunPlan("cnn", 2, settings.n_seeds, 500, vectorised=False)]

    def main(argv=None):
        raise RuntimeError("a plan never runs the experiment")
''')
UNDECLARED = "def main(argv=None):\n    raise RuntimeError('never run')\n"


@pytest.fixture
def fake_analyses(tmp_path):
    directory = tmp_path / "analyses"
    directory.mkdir()
    first, second = "cvae_mlp_beta_eta", "theorem_checks"  # an image experiment (MNIST in full mode), a synthetic one
    (directory / f"{first}.py").write_text(DECLARED)
    (directory / f"{second}.py").write_text(UNDECLARED)
    return directory, first, second


def test_a_group_counts_runs_and_the_steps_taken_one_after_another():
    batched, separate = RunPlan("mlp", 13, 5, 20000), RunPlan("cnn", 25, 5, 20000, vectorised=False)
    assert (batched.runs, batched.sequential_steps) == (65, 20000)
    assert (separate.runs, separate.sequential_steps) == (125, 125 * 20000)
    assert separate.hours() == pytest.approx(125 * 20000 * GPU_SECONDS_PER_STEP / 3600)
    assert batched.hours(seconds_per_step=0.036) == pytest.approx(0.2)


def test_plans_are_read_from_each_script_and_a_missing_one_is_named(fake_analyses, tmp_path):
    directory, first, second = fake_analyses
    plans = plan_experiments(Settings("full", tmp_path / "out", n_seeds=5), [first, second], directory)
    assert plans[second] is None
    assert [(g.label, g.configs, g.seeds, g.steps) for g in plans[first]] == [("grid", 4, 5, 1000), ("cnn", 2, 5, 500)]
    text = describe_plan(plans, seconds_per_step=0.6)
    assert "4 x 1,000 x 5" in text and "2 x 500 x 5" in text and "(one after another)" in text
    # 1,000 batched steps + 10 runs x 500 steps one after another, at 0.6 s: 1 h
    assert "total: about 1.00 GPU hours (60 min)" in text
    assert f"no plan (or its data missing) for {second} (not in the total)" in text


def test_the_plan_follows_the_settings(fake_analyses, tmp_path):
    directory, first, _ = fake_analyses
    (quick,) = [plan_experiments(Settings("quick", tmp_path, n_seeds=3, max_steps=7), [first], directory)[first][0]]
    assert (quick.seeds, quick.steps) == (3, 7)


def test_reproduce_plan_prints_the_cost_and_runs_nothing(fake_analyses, tmp_path):
    directory, first, second = fake_analyses
    out = tmp_path / "results"
    result = CliRunner().invoke(cli, ["reproduce", "--plan", "--only", first, "--only", second, "--out", str(out),
                                      "--analyses-dir", str(directory), "--seeds", "2"])
    assert result.exit_code == 0, result.output
    assert "Plan (full scale, 2 seeds" in result.output and "4 x 1,000 x 2" in result.output
    assert "no plan (or its data missing) for" in result.output
    assert not out.exists()  # nothing ran, nothing was written


def test_full_mode_prints_the_plan_before_it_starts(fake_analyses, tmp_path):
    directory, first, _ = fake_analyses
    result = CliRunner().invoke(cli, ["reproduce", "--only", first, "--out", str(tmp_path / "results"),
                                      "--analyses-dir", str(directory), "--mnist-dir", str(tmp_path / "none")])
    assert result.exit_code != 0  # no MNIST here: refused, but only after the plan was printed
    assert result.output.index("Plan (full scale") < result.output.index("MNIST")


def test_every_experiment_declares_its_plan(tmp_path):
    from ppl_vae.reproduce import EXPERIMENTS, default_analyses_dir

    plans = plan_experiments(Settings("quick", tmp_path), list(EXPERIMENTS), default_analyses_dir())
    assert all(plans[name] for name in EXPERIMENTS)
    assert "no plan" not in describe_plan(plans)


def test_a_plan_sized_by_missing_data_is_listed_as_unknown_not_raised(tmp_path):
    from ppl_vae.reproduce import default_analyses_dir

    names = ["cvae_linear_quadrant_beta", "cvae_completions"]  # the first counts full mode's MNIST rows
    plans = plan_experiments(Settings("full", tmp_path, mnist_dir=tmp_path / "none"), names, default_analyses_dir())
    assert plans["cvae_linear_quadrant_beta"] is None and plans["cvae_completions"]
    assert "no plan (or its data missing) for cvae_linear_quadrant_beta" in describe_plan(plans)
