"""Open the report in headless Chromium: every figure decodes and the headline is shown.

Skipped when no chromium is installed (CI installs Debian's ``chromium`` in .ci/run).
A screenshot is kept in test-artifacts/report.png at the repository root.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# Records, once the page has loaded, each image's decoded width and how many decoded.
CHECK_SCRIPT = """<script>window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    imgs[i].setAttribute('data-natural-width', imgs[i].naturalWidth);
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; }
  }
  document.body.setAttribute('data-images-loaded', ok + '/' + imgs.length);
});</script>"""


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless chromium (apt-get install chromium)")
def test_report_renders_in_chromium(report_page, tmp_path):
    out = report_page
    page = out.read_text()
    n_images = page.count("<img ")
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))

    dom = chromium(tmp_path / "profile-dom", "--virtual-time-budget=10000", "--dump-dom", checked.as_uri()).stdout
    assert f'data-images-loaded="{n_images}/{n_images}"' in dom
    widths = [int(w) for w in re.findall(r'data-natural-width="(\d+)"', dom)]
    assert len(widths) == n_images and min(widths) > 100
    assert re.search(r"of 6 latent dimensions collapsed; theory predicted \d+", dom)
    assert re.search(r"z1: \d+ of 4 latent dimensions collapsed", dom)

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    chromium(tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1200,3000", out.as_uri())
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
