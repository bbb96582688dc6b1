"""docs/own-model.md: every Python block runs in order, then every ppl-vae command of its bash blocks."""

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from ppl_vae.cli import main

PAGE = Path(__file__).resolve().parents[2] / "docs" / "own-model.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(PAGE.read_text()) if lang == language]


def commands(script: str) -> list[list[str]]:
    """The commands of a bash block (continuation lines joined, comments dropped); only ppl-vae is allowed."""
    lines = [line for line in script.replace("\\\n", " ").splitlines() if line.strip() and not line.startswith("#")]
    words = [shlex.split(line, comments=True) for line in lines]
    for command in words:
        assert command[0] == "ppl-vae", f"the page runs only ppl-vae commands, found {command[0]!r}"
    return words


def test_the_page_has_code_to_run():
    assert len(blocks("python")) >= 5 and len(blocks("bash")) >= 2


def collapsed(idata) -> int:
    return int(idata.collapse.z_n_collapsed)


def test_the_page_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "own_model_doc"}
    for number, code in enumerate(blocks("python")):
        exec(compile(code, f"{PAGE.name}[python block {number}]", "exec"), namespace)
    runs, sigma, limit = namespace["runs"], namespace["sigma"], namespace["limit"]
    assert set(runs) == {1.0, sigma} and sigma <= limit < 1.0
    # the story the page tells: the first attempt collapses, the theory saw it coming, the fix keeps the dimensions
    first, fixed = runs[1.0], runs[sigma]
    assert collapsed(first) >= 4 and collapsed(first) > collapsed(fixed)
    predicted = int(first.theory.collapsed.sum())
    assert predicted > int(fixed.theory.collapsed.sum())
    assert collapsed(first) == predicted + 1  # the page explains the one more: the first mode is the mean image
    # ... and the monitor saw the dimensions die during training: fewer collapsed at the first reading than at the end
    readings = namespace["monitor"].readings
    assert readings[0].n_collapsed["z"] < readings[-1].n_collapsed["z"]
    assert all("kl_history" in run.groups() for run in runs.values())
    comparison = namespace["comparison"]  # az.compare ranks the fixed run first, beyond its standard error
    assert comparison.index[0] == f"sigma={sigma:g}" and comparison["elpd_diff"].iloc[1] > 2 * comparison["dse"].iloc[1]
    for script in blocks("bash"):
        for command in commands(script):
            result = CliRunner().invoke(main, command[1:])
            assert result.exit_code == 0, f"{' '.join(command)}\n{result.output}"
    page = (tmp_path / "report.html").read_text()
    for name in ("vae_sigma1", f"vae_sigma{sigma:g}"):
        assert f"<b>{name}</b>: " in page
    assert "latent dimensions collapsed; theory predicted" in page and "not drawn" not in page
    assert page.count('alt="since when') == 2 and page.count('class="what-to-change"') == 2
    # the CLI sweep of the same program: two runs, the large sigma collapsing more than the small one
    from ppl_vae.diagnostics import load

    swept = load(tmp_path / "sweeps" / "sigma" / "combined.nc")
    by_run = swept.collapse["z_n_collapsed"].to_series()
    assert by_run["sigma=1_seed=0"] > by_run["sigma=0.4_seed=0"]
    assert (tmp_path / "sweep_report.html").is_file()


if __name__ == "__main__":
    pytest.main([__file__])
