"""Open the report of a mixed set of runs in headless Chromium, at two widths.

The runs: a linear CVAE, an MLP VAE (with a kl_history.nc), a user's Pyro model
diagnosed with ``diagnose`` (an .nc file with a kl_history group) and a two-level
MLP MHVAE. Every figure must decode, and the sections the page promises must be there.
Skipped when no chromium is installed (CI installs Debian's ``chromium`` in .ci/run).
Screenshots are kept in test-artifacts/ at the repository root (docs/ holds committed ones).
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WIDTHS = (1280, 720)

# Records, once the page has loaded, each image's decoded width, how many decoded, and the
# page's widest element against the window (nothing may stick out sideways).
CHECK_SCRIPT = """<script>window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    imgs[i].setAttribute('data-natural-width', imgs[i].naturalWidth);
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; }
  }
  document.body.setAttribute('data-images-loaded', ok + '/' + imgs.length);
  document.body.setAttribute('data-overflow', document.documentElement.scrollWidth > window.innerWidth ? 'yes' : 'no');
});</script>"""


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def probe_copy(page: str, path: Path) -> Path:
    """The page with the probe script; the test's copy drops the page's CSP, which (rightly) forbids any script."""
    without_csp = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)
    assert without_csp != page
    path.write_text(without_csp.replace("</body>", CHECK_SCRIPT + "</body>"))
    return path


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless chromium (apt-get install chromium)")
@pytest.mark.parametrize("width", WIDTHS)
def test_mixed_report_renders_in_chromium(mixed_report, tmp_path, width):
    page = mixed_report.read_text()
    n_images = page.count("<img ")
    checked = probe_copy(page, tmp_path / "checked.html")
    dom = chromium(tmp_path / "profile-dom", "--virtual-time-budget=10000", f"--window-size={width},2000",
                   "--dump-dom", checked.as_uri()).stdout
    assert f'data-images-loaded="{n_images}/{n_images}"' in dom
    widths = [int(w) for w in re.findall(r'data-natural-width="(\d+)"', dom)]
    assert len(widths) == n_images and min(widths) > 100
    assert 'data-overflow="no"' in dom  # no element wider than the window

    # one section per model family, and in each run what the page promises
    for family in ("cvae", "vae", "pyro", "mhvae"):
        assert f'id="family-{family}"' in dom
    assert dom.count('class="run"') == 4
    assert dom.count("<h4>What to change</h4>") == 4
    assert dom.count("to keep k z1 dimensions active") == 1 and dom.count("to keep k z2 dimensions active") == 1
    assert "LINEAR model's answer" in dom and "From the run's own closed form" in dom
    # every run: fit writes each run's kl_history.nc, and the user's model's file carries a kl_history group
    assert dom.count("<figcaption>since when: mean KL per dimension over training") == 4
    assert dom.count("<figcaption>learned against predicted") == 4
    assert dom.count("<figcaption>prior against aggregate posterior") == 5  # one per latent level
    assert re.search(r"of 6 latent dimensions collapsed; theory predicted \d+", dom)
    assert re.search(r"z1: \d+ of 4 latent dimensions collapsed", dom)
    assert "not drawn" not in dom
    for word in ("theta", "mode", "eta_enc", "eta_dec"):
        assert f"<dt>{word}</dt>" in dom

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"report-{width}.png"
    shot.unlink(missing_ok=True)
    chromium(tmp_path / "profile-shot", f"--screenshot={shot}", f"--window-size={width},2400", mixed_report.as_uri())
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
