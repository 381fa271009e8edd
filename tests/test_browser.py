"""A real browser looks at the HTML report: headless Chromium (Debian's `chromium`).

The report itself carries no script. The test loads a copy with a small probe appended:
after the page has loaded it counts the comparison table's rows and, for every <img>,
whether it decoded (naturalWidth > 0) and whether its pixels vary (drawn on a canvas; a
blank plot is one colour). The verdict goes into document.title, which `--dump-dom` shows.
A screenshot of the whole page is kept as artifacts/report.png.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab.report.synth import PROFILES, with_profile, write_run_dir

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
PROBE = """
<script>
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  let decoded = 0, varied = 0;
  for (const img of images) {
    if (!img.complete || img.naturalWidth === 0 || img.naturalHeight === 0) continue;
    decoded++;
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    const colours = new Set();
    for (let i = 0; i < px.length && colours.size < 50; i += 4 * 97) {
      colours.add(px[i] + ',' + px[i + 1] + ',' + px[i + 2]);
    }
    if (colours.size >= 10) varied++;
  }
  const rows = document.querySelectorAll('#comparison tbody tr').length;
  document.title = `probe images=${images.length} decoded=${decoded} varied=${varied} rows=${rows}`;
});
</script>
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    pytest.fail("headless Chromium is required: apt-get install chromium (.ci/run does)")


def run_chromium(*args: str) -> subprocess.CompletedProcess[str]:
    # --no-sandbox: CI and sessions run as root, where Chromium's sandbox refuses to start.
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--disable-dev-shm-usage", "--no-first-run", "--virtual-time-budget=15000"]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.slow
def test_html_report_renders_table_and_every_plot_in_chromium(tmp_path: Path) -> None:
    base = write_run_dir(tmp_path, "20261201T000000Z", trials=15, seed=1)
    current = write_run_dir(tmp_path, "20261202T000000Z", trials=15, seed=2,
                            profiles=with_profile("lwt", ghost_probability=0.5, ghost_ms=3.0))
    report = tmp_path / "report.html"
    proc = subprocess.run(
        [sys.executable, "-m", "lab.commands.report_cmd", str(current), "--baseline", str(base),
         "--format", "html", "-o", str(report)],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    html = report.read_text()
    assert "<script" not in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "fetches from network"

    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", PROBE + "</body>"))
    dom = run_chromium("--dump-dom", probed.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    title = re.search(r"<title>(.*?)</title>", dom.stdout)
    assert title is not None, dom.stdout[:2000]
    found = dict(re.findall(r"(\w+)=(\d+)", title.group(1)))
    assert found, f"probe did not run: {title.group(1)!r}"
    images = int(found["images"])
    assert images >= 3  # teardown windows, pass rate by position, handoff timelines
    assert int(found["decoded"]) == images, title.group(1)
    assert int(found["varied"]) == images, title.group(1)
    assert int(found["rows"]) == len(PROFILES)
    for impl in PROFILES:
        assert f"<td>{impl}</td>" in dom.stdout

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    taken = run_chromium("--window-size=1400,4000", f"--screenshot={shot}", report.as_uri())
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        grey = image.convert("L")
        histogram = grey.histogram()
        ink = sum(histogram[:200]) / (grey.width * grey.height)
    assert image.size == (1400, 4000)
    assert ink > 0.02, f"screenshot looks blank ({ink:.1%} non-white pixels)"
