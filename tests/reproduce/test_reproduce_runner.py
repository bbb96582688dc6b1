"""The reproduce job: finding and running scripts, failures reported not raised, output protection, index page."""

from __future__ import annotations

import json
import textwrap

import pytest
from click.testing import CliRunner

from ppl_vae._io import RunDirectoryExistsError
from ppl_vae.cli import main as cli
from ppl_vae.reproduce import (EXPERIMENTS, ClaimCheck, Settings, check_names, find_analyses_dir, load_script,
                               run_experiments, write_index)

GOOD = textwrap.dedent('''
    from ppl_vae.reproduce import ClaimCheck, ExperimentOutput, parse_settings
    import pandas as pd

    def main(argv=None):
        settings = parse_settings("fake", argv)
        out = ExperimentOutput(settings.out, "{name}", overwrite=settings.overwrite)
        out.table("numbers", pd.DataFrame({{"scale": [settings.scale], "seed": [settings.seed]}}), "the settings seen")
        check = ClaimCheck("{name}", "fake claim", {agrees}, "rule", {{"scale": settings.scale}})
        out.claim(check)
        return check
''')
BAD = textwrap.dedent('''
    def main(argv=None):
        raise RuntimeError("boom in the script")
''')


@pytest.fixture
def fake_analyses(tmp_path):
    """An analyses folder: the first experiment agrees, the second disagrees, the third raises."""
    directory = tmp_path / "analyses"
    directory.mkdir()
    first, second, third = list(EXPERIMENTS)[:3]
    (directory / f"{first}.py").write_text(GOOD.format(name=first, agrees=True))
    (directory / f"{second}.py").write_text(GOOD.format(name=second, agrees=False))
    (directory / f"{third}.py").write_text(BAD)
    return directory, (first, second, third)


def test_failure_is_reported_and_others_still_run(fake_analyses, tmp_path):
    directory, (first, second, third) = fake_analyses
    settings = Settings("tiny", tmp_path / "out", seed=3)
    outcomes = run_experiments(settings, [third, first, second], analyses_dir=directory, progress=False)

    assert [o.name for o in outcomes] == [first, second, third]  # the paper's order, whatever was asked
    assert [o.status for o in outcomes] == ["agrees", "disagrees", "failed"]
    assert "boom in the script" in outcomes[2].error
    assert (tmp_path / "out" / first / "numbers.csv").read_text().splitlines()[1] == "tiny,3"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [e["status"] for e in summary["experiments"]] == ["agrees", "disagrees", "failed"]


def test_index_has_summary_row_per_experiment_and_links_tables(fake_analyses, tmp_path):
    directory, (first, second, third) = fake_analyses
    settings = Settings("tiny", tmp_path / "out")
    outcomes = run_experiments(settings, [first, second, third], analyses_dir=directory, progress=False)
    page = write_index(settings.out, outcomes, scale="tiny").read_text()
    summary = page.split('id="summary"')[1].split("</table>")[0]
    assert summary.count('<tr class="') == 3
    assert '<tr class="agrees">' in summary and '<tr class="disagrees">' in summary and '<tr class="failed">' in summary
    assert f'href="{first}/numbers.csv"' in page
    assert "boom in the script" in page


def test_non_empty_output_is_refused_before_anything_runs(fake_analyses, tmp_path):
    directory, (first, _, _) = fake_analyses
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    with pytest.raises(RunDirectoryExistsError):
        run_experiments(Settings("tiny", out), [first], analyses_dir=directory, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]
    outcomes = run_experiments(Settings("tiny", out, overwrite=True), [first], analyses_dir=directory, progress=False)
    assert outcomes[0].status == "agrees" and (out / "precious.txt").exists()


def test_names_are_checked_and_ordered():
    assert check_names(None) == list(EXPERIMENTS)
    assert check_names(["mitigations", "theorem_checks"]) == ["theorem_checks", "mitigations"]
    with pytest.raises(ValueError, match="unknown experiment"):
        check_names(["no_such_experiment"])


def test_missing_analyses_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--analyses-dir"):
        find_analyses_dir(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="name must be one of"):
        load_script("not_an_experiment", tmp_path)


def test_every_registered_experiment_has_a_script():
    directory = find_analyses_dir()
    assert all((directory / f"{name}.py").is_file() for name in EXPERIMENTS)


def test_cli_exit_status_and_report(fake_analyses, tmp_path):
    directory, (first, _, third) = fake_analyses
    runner = CliRunner()
    out = tmp_path / "cli"
    ok = runner.invoke(cli, ["reproduce", "--tiny", "--only", first, "--out", str(out),
                             "--analyses-dir", str(directory)])
    assert ok.exit_code == 0, ok.output
    assert (out / "index.html").is_file() and "1/1 experiments agree" in ok.output
    results = (out / "RESULTS.md").read_text()
    assert results.startswith("# Results") and "ppl-vae reproduce --tiny --only" in results
    assert f"| {first} | agrees |" in results and f"## {first}" in results

    again = runner.invoke(cli, ["reproduce", "--tiny", "--only", first, "--out", str(out),
                                "--analyses-dir", str(directory)])
    assert again.exit_code != 0 and "--overwrite" in again.output
    assert "--resume" not in again.output  # reproduce has no --resume to suggest

    failing = runner.invoke(cli, ["reproduce", "--tiny", "--only", first, "--only", third, "--out", str(out),
                                  "--overwrite", "--analyses-dir", str(directory)])
    assert failing.exit_code == 1
    assert third in failing.output


def test_cli_rejects_unknown_experiment(tmp_path):
    result = CliRunner().invoke(cli, ["reproduce", "--only", "nope", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and not (tmp_path / "x").exists()


def test_cli_runs_a_real_script_at_tiny_scale(tmp_path):
    out = tmp_path / "real"
    result = CliRunner().invoke(cli, ["reproduce", "--tiny", "--only", "cvae_linear_quadrant_beta", "--out", str(out),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    check = json.loads((out / "cvae_linear_quadrant_beta" / "claim.json").read_text())
    assert ClaimCheck.from_dict(check).experiment == "cvae_linear_quadrant_beta"
    assert 'src="cvae_linear_quadrant_beta/singular_values.png"' in (out / "index.html").read_text()


def test_full_mode_without_mnist_stops_before_running(tmp_path):
    out = tmp_path / "full"
    result = CliRunner().invoke(cli, ["reproduce", "--only", "mitigations", "--out", str(out),
                                      "--mnist-dir", str(tmp_path / "no_mnist")])
    assert result.exit_code != 0 and "--quick" in result.output
    assert not out.exists()


def test_mnist_available_needs_all_four_files(tmp_path):
    from ppl_vae.data import MNIST_FILES
    from ppl_vae.reproduce import mnist_available

    stems = [stem for pair in MNIST_FILES.values() for stem in pair]
    for stem in stems[:-1]:
        (tmp_path / stem).write_bytes(b"")
    assert not mnist_available(tmp_path)
    (tmp_path / f"{stems[-1]}.gz").write_bytes(b"")
    assert mnist_available(tmp_path)


def test_a_resumed_job_keeps_finished_experiments_and_reruns_the_rest(fake_analyses, tmp_path):
    """Full mode resumes per experiment: claim.json marks an experiment done; other settings are refused."""
    directory, (first, second, third) = fake_analyses
    settings = Settings("tiny", tmp_path / "out", seed=3)
    run_experiments(settings, [first, second, third], analyses_dir=directory, progress=False)
    marker = tmp_path / "out" / first / "numbers.csv"
    marker.write_text("kept\n")  # a rerun would rewrite it
    (directory / f"{third}.py").write_text(GOOD.format(name=third, agrees=True))  # the failed one now works
    outcomes = run_experiments(settings, [first, second, third], analyses_dir=directory, progress=False, resume=True)
    assert [o.status for o in outcomes] == ["agrees", "disagrees", "agrees"]
    assert outcomes[0].seconds == 0.0 and marker.read_text() == "kept\n"
    with pytest.raises(ValueError, match="cannot resume"):
        run_experiments(Settings("tiny", tmp_path / "out", seed=4), [first], analyses_dir=directory,
                        progress=False, resume=True)
    with pytest.raises(FileNotFoundError):
        run_experiments(Settings("tiny", tmp_path / "new", seed=3), [first], analyses_dir=directory,
                        progress=False, resume=True)
