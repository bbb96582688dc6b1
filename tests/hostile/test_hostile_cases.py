"""Every hostile case of the table ends as it must: one clear error naming the file or option, nothing lost.

The table (``hostile_cases.CASES``) covers every file a run or sweep folder
holds (empty, truncated, wrong type, wrong keys, wrong shapes, NaN), planted
links, oversized inputs and the Python API; its module docstring defines the
verdicts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hostile_cases import CASES, expected, make_fixtures, run_case


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return make_fixtures(tmp_path_factory.mktemp("made"))


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_case(case, made, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    verdict, output = run_case(case, made, tmp_path)
    assert verdict in expected(case), f"{case.name}: {verdict}\n{output}"
    assert not (tmp_path / "PLANTED_CODE_RAN").exists()
