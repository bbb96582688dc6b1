"""The bench's monitor section: one reading against one epoch of the docs' digits VAE."""

import pyro
import torch

from ppl_vae.bench import COLUMNS, run_bench
from ppl_vae.bench.monitor import monitor_rows


def test_monitor_rows_time_an_epoch_and_a_reading_and_leave_no_parameters_behind():
    lines = []
    rows = monitor_rows(torch.device("cpu"), repeats=1, calls=2, log=lines.append)
    assert [row["variant"] for row in rows] == ["svi_epoch", "monitor_call"]
    assert set(rows[0]) == set(COLUMNS) and all(row["section"] == "monitor" for row in rows)
    epoch, call = (row["wall_s"] for row in rows)
    assert epoch > 0 and call > 0
    assert f"{call / epoch:.1%} of one epoch" in rows[1]["note"] and "256 held-out rows" in rows[1]["note"]
    assert len(lines) == 1 and "monitor call" in lines[0]
    assert list(pyro.get_param_store().keys()) == []


def test_run_bench_measures_the_monitor_section_on_request():
    table = run_bench("cpu", quick=True, threads=1, sections=["monitor"])
    assert table.section.tolist() == ["monitor", "monitor"]
