"""``index.html`` of a reproduce job: the verdicts first, then every figure and table.

The page links the files each experiment recorded in its manifest (relative
paths, so the results folder can be moved or zipped as a whole) and shows
small CSV tables inline.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ppl_vae import __version__
from ppl_vae._io import atomic_write_text
from ppl_vae.reproduce.outputs import read_manifest
from ppl_vae.reproduce.runner import EXPERIMENTS, ExperimentOutcome

INDEX = "index.html"
#: Tables longer than this are linked, not shown inline.
INLINE_ROWS = 40

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f2f2f2} .agrees{background:#e3f4e1} .disagrees{background:#fdf1d6} .failed{background:#f9d6d5}
.not-converged{background:#e8e8f4}
figure{display:inline-block;margin:.5em;max-width:100%} figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.85em;color:#555;max-width:640px} pre{background:#f7f7f7;padding:.5em;overflow:auto}
.numbers{font-family:monospace;font-size:.8em;white-space:pre-wrap}
"""


def _numbers_text(numbers: dict) -> str:
    return json.dumps(numbers, indent=None, sort_keys=True, default=str)


def summary_table(outcomes: Sequence[ExperimentOutcome]) -> str:
    """The headline table: experiment, the paper's claim, the verdict, the numbers, the time."""
    rows = ["<table id=\"summary\"><tr><th>experiment</th><th>paper's claim</th><th>measured agrees?</th>"
            "<th>rule and numbers</th><th>time (s)</th></tr>"]
    for outcome in outcomes:
        check = outcome.check
        claim = html.escape(check.claim) if check else html.escape(EXPERIMENTS.get(outcome.name, ""))
        verdict = {"agrees": "yes", "disagrees": "no", "not converged": "not converged", "failed": "failed"}[outcome.status]
        detail = (f"{html.escape(check.rule)} ({check.n_seeds} seeds){_evidence_html(check)}"
                  if check else f"<pre>{html.escape(outcome.error.splitlines()[0] if outcome.error else '')}</pre>")
        rows.append(f"<tr class=\"{outcome.status.replace(' ', '-')}\"><td><a href=\"#{outcome.name}\">{outcome.name}</a></td>"
                    f"<td>{claim}</td><td><b>{verdict}</b></td><td>{detail}</td><td>{outcome.seconds:.1f}</td></tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _evidence_html(check) -> str:
    """The rule's checks as a small table; the raw numbers only when it recorded no checks."""
    table = check.evidence_table()
    if len(table):
        return table.to_html(index=False, border=0, float_format=lambda v: f"{v:.4g}", na_rep="-",
                             classes="evidence")
    return f"<div class=\"numbers\">{html.escape(_numbers_text(check.numbers))}</div>"


def _table_html(path: Path) -> str:
    frame = pd.read_csv(path)
    if len(frame) > INLINE_ROWS:
        return f"<p>{len(frame)} rows; see the CSV file.</p>"
    return frame.to_html(index=False, border=0, float_format=lambda v: f"{v:.4g}", na_rep="-")


def experiment_section(root: Path, outcome: ExperimentOutcome) -> str:
    """One experiment: its description, error if any, figures, tables and data files."""
    name = outcome.name
    parts = [f"<section id=\"{name}\"><h2>{name}</h2><p>{html.escape(EXPERIMENTS.get(name, ''))}</p>"]
    if outcome.error:
        parts.append(f"<p><b>failed</b></p><pre>{html.escape(outcome.error)}</pre>")
    entries = read_manifest(root / name)
    for entry in (e for e in entries if e["kind"] == "figure"):
        href = f"{name}/{entry['path']}"
        parts.append(f"<figure><a href=\"{html.escape(href)}\"><img src=\"{html.escape(href)}\" "
                     f"alt=\"{html.escape(entry['caption'])}\"></a>"
                     f"<figcaption>{html.escape(entry['caption'])}</figcaption></figure>")
    for entry in (e for e in entries if e["kind"] == "table"):
        href = f"{name}/{entry['path']}"
        parts.append(f"<h3><a href=\"{html.escape(href)}\">{html.escape(entry['path'])}</a></h3>"
                     f"<p>{html.escape(entry['caption'])}</p>{_table_html(root / href)}")
    data = [e for e in entries if e["kind"] == "netcdf"]
    if data:
        parts.append("<p>Data (netCDF):</p><ul>" + "".join(
            f"<li><a href=\"{html.escape(name + '/' + e['path'])}\">{html.escape(e['path'])}</a>: "
            f"{html.escape(e['caption'])}</li>" for e in data) + "</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def write_index(root: str | Path, outcomes: Sequence[ExperimentOutcome], *, scale: str,
                command: str = "") -> Path:
    """Write ``root/index.html`` for ``outcomes`` and return its path."""
    root = Path(root)
    n_agree = sum(o.status == "agrees" for o in outcomes)
    n_failed = sum(o.status == "failed" for o in outcomes)
    n_unconverged = sum(o.status == "not converged" for o in outcomes)
    body = [
        "<h1>Reproducing Dang et al. (ICLR 2024): posterior collapse in CVAEs and MHVAEs</h1>",
        f"<p>ppl_vae {html.escape(__version__)}, scale <b>{html.escape(scale)}</b>"
        + (f", command <code>{html.escape(command)}</code>" if command else "")
        + f". {n_agree} of {len(outcomes)} experiments agree with the paper's claim; {n_failed} failed; "
        f"{n_unconverged} not converged (no verdict). "
        "A latent dimension counts as collapsed when its data-mean KL(q || p) is below 0.01 nats.</p>",
        summary_table(outcomes),
        *(experiment_section(root, outcome) for outcome in outcomes),
    ]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ppl_vae reproduce</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    return atomic_write_text(root / INDEX, page)
