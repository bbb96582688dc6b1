"""The page's structure from in-memory runs: the convergence flag, a KL-history group, NLL axes per likelihood."""

import json
import re

from ppl_vae.report import build_html
from ppl_vae.report.html import comparison_figures
from report_testing import kl_history_fixture


def test_convergence_flag_and_a_kl_history_group_reach_the_page(diagnosed):
    """Not escaping, but the same tiny run: the flag stands beside the headline; the history group is drawn."""
    idata = diagnosed.copy()
    idata.add_groups({"kl_history": kl_history_fixture({"code": 3})})
    page = build_html({"mine": idata}, converged={"mine": False})
    assert re.search(r'<p class="headline"><b>mine</b>: [^<]*<span class="flag no">did not converge', page)
    assert "<figcaption>since when:" in page
    assert "convergence not judged" in build_html({"mine": diagnosed})


def test_users_models_share_an_nll_axis_only_with_one_named_likelihood(diagnosed):
    """Two Pyro models whose files do not say their likelihood: no across-run NLL panel (it could mix kinds)."""
    first, second = diagnosed.copy(), diagnosed.copy()
    first.attrs["hyperparameters"] = json.dumps({"beta": 1.0})
    second.attrs["hyperparameters"] = json.dumps({"beta": 2.0})
    captions = lambda figures: [f["caption"] for f in figures]  # noqa: E731
    assert not any("NLL" in c for c in captions(comparison_figures({"a": first, "b": second}, {})))
    first.attrs["likelihood"] = second.attrs["likelihood"] = "bernoulli"
    assert any("NLL against beta" in c for c in captions(comparison_figures({"a": first, "b": second}, {})))
