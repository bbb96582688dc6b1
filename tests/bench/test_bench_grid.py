"""The grid and gradient-variance sections of the bench, at a tiny size: the figures exist and read right."""

import math

import pandas as pd

from ppl_vae.bench import grid
from ppl_vae.bench.run import COLUMNS


def test_gradient_variance_section_reports_a_reduction_for_both_architectures():
    rows = grid.gradient_variance_rows(draws=30, log=lambda line: None)
    assert [row["case"] for row in rows] == ["digits/mhvae-linear/b128", "digits/mhvae-mlp/b128"]
    for row in rows:
        assert set(row) == set(COLUMNS)
        ratio = float(row["note"].split("x lower")[0].split()[-1])
        assert ratio > 1.0  # the analytic z2 KL removes noise, it never adds it


def test_grid_section_times_both_sides_and_the_headline_reads_them(monkeypatch):
    monkeypatch.setattr(grid, "GRID", {"beta": [0.5, 2.0], "eta_dec": [1.0]})
    rows = grid.grid_rows("cpu", epochs=1, log=lambda line: None)
    table = pd.DataFrame(rows, columns=COLUMNS)
    assert list(table.variant) == ["run_sweep", "plain_dataloader"] and (table.wall_s > 0).all()
    lines = grid.headline(table)
    assert len(lines) == 1 and lines[0].startswith("grid end to end vs plain DataLoader loop:")
    assert math.isfinite(float(lines[0].split(": ")[1].split("x")[0]))


def test_headline_says_when_nothing_was_measured():
    assert grid.headline(pd.DataFrame(columns=COLUMNS)) == ["(none of the headline sections was measured)"]
