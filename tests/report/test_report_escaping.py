"""Nothing from a file reaches the page unescaped, and the page forbids scripts (issue 23.1).

Markup is planted in every name, attribute and coordinate the report shows: the run
name, the seed, the model config (family, arch), hyper-parameter names and values, the
data spec, the theory's notes, the latent site's name (variables, dimensions, the KL
history), and a figure's error message.
"""

import json
from html.parser import HTMLParser

from ppl_vae.diagnostics import save
from ppl_vae.report import build_html
from ppl_vae.report.page import CONTENT_SECURITY_POLICY
from ppl_vae.report.runs import write_report
from report_testing import kl_history_fixture

PAYLOAD = '"><img src=x onerror=alert(1)><script>alert(2)</script>'
SITE_PAYLOAD = '"><svg><script>alert(4)<b>'  # no space (latent_sites is space-separated), no '/' (netCDF names)
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "h4", "p", "b", "a", "dl", "dt",
                "dd", "div", "table", "thead", "tbody", "tr", "th", "td", "section", "figure", "img", "figcaption",
                "code", "span"}
RAW_MARKERS = ("<script", "<img src=x", "<svg")  # markup only: the escaped text may still read "onerror="


def renamed_site(idata, old, new):
    """The InferenceData with latent site ``old`` renamed ``new`` everywhere (variables and dimensions)."""
    for group in idata.groups():
        ds = idata[group]
        names = {name: name.replace(old, new, 1) for name in [*ds.data_vars, *ds.dims]
                 if name == old or name.startswith(f"{old}_")}
        if names:
            idata[group] = ds.rename(names)
    idata.collapse.attrs["latent_sites"] = new
    return idata


def hostile(idata):
    idata = renamed_site(idata.copy(), "code", f"code{SITE_PAYLOAD}")
    idata.attrs.update(
        seed=PAYLOAD, data_spec=json.dumps({"name": PAYLOAD, PAYLOAD: 1}),
        model_config=json.dumps({"family": PAYLOAD, "arch": PAYLOAD}),
        hyperparameters=json.dumps({"beta": 2.0, PAYLOAD: PAYLOAD}),
        theory_unavailable=PAYLOAD, converged=PAYLOAD, metrics_data=PAYLOAD,
    )
    if "theory" in idata.groups():
        idata.theory.attrs["prediction"] = PAYLOAD
        idata.theory.attrs["model"] = PAYLOAD  # no threshold form: its name goes into the note
    return idata


class Elements(HTMLParser):
    """Every start tag of a page with its attributes, as a browser's tokenizer sees them."""

    def __init__(self, page: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def assert_no_markup_from_files(page: str) -> None:
    for marker in RAW_MARKERS:
        assert marker not in page, marker
    assert "&lt;script&gt;" in page.partition("</head>")[2]  # the payload is shown, as text
    tags = Elements(page).tags
    assert {tag for tag, _ in tags} <= ALLOWED_TAGS, {tag for tag, _ in tags} - ALLOWED_TAGS
    assert not [attrs for _, attrs in tags if any(name.startswith("on") for name in attrs)]  # no event handlers
    assert all(attrs["src"].startswith("data:image/png;base64,") for tag, attrs in tags if tag == "img")
    policies = [attrs["content"] for tag, attrs in tags if tag == "meta" and attrs.get("http-equiv")]
    assert policies == [CONTENT_SECURITY_POLICY]


def test_every_shown_name_and_attribute_is_escaped(diagnosed):
    idata = hostile(diagnosed)
    site = f"code{SITE_PAYLOAD}"
    history = kl_history_fixture({site: 3})
    history.attrs["rows"] = PAYLOAD
    page = build_html({f"run{PAYLOAD}": idata, "plain": diagnosed}, histories={f"run{PAYLOAD}": history},
                      title=f"title{PAYLOAD}")
    assert_no_markup_from_files(page)
    assert page.count("&lt;script&gt;alert(2)&lt;/script&gt;") >= 8  # name, title, seed, config, spec, ...
    assert "&lt;script&gt;alert(4)&lt;b&gt;" in page  # the site's name, in the headline and tables


def test_the_page_forbids_scripts(diagnosed):
    page = build_html({"plain": diagnosed})
    csp = [attrs["content"] for tag, attrs in Elements(page).tags
           if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy"]
    assert csp, "no Content-Security-Policy meta tag"
    policy = csp[0]
    assert "script-src 'none'" in policy and "default-src 'none'" in policy
    assert page.index("Content-Security-Policy") < page.index("<title>")  # before anything a file supplies


def test_a_sent_diagnostics_file_with_markup_in_its_attributes(diagnosed, tmp_path):
    """The reported case: ``ppl-vae report evil.nc`` with a <script> seed attribute."""
    path = save(hostile(diagnosed), tmp_path / "evil.nc")
    out = write_report([path], tmp_path / "r.html", progress=False, device="cpu")
    assert_no_markup_from_files(out.read_text())

