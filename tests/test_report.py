"""``chanprune report --html``: a self-contained page whose plots render in a real browser."""

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torchvision")
pytest.importorskip("matplotlib")
EXE = shutil.which("chanprune") or f"{sys.executable} -m chanprune.cli"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REORDER_BLUE = np.array([0x1F, 0x77, 0xB4]) / 255


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "r18.html"
    r = subprocess.run(
        [*EXE.split(), "report", "resnet18", "--input-size", "32", "--amounts", "0.25", "0.5",
         "--runs", "2", "--html", str(out), "--targets", "0.7", "--calibrate", "2",
         "--calibrate-batch", "8", "--limit", "100"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"wrote {out}" in r.stdout and "copies baseline" in r.stdout
    assert "top-1 unpruned" in r.stdout and "constrained (l1) at 0.7" in r.stdout
    return out


def test_report_is_self_contained_with_plots_and_tables(report):
    page = report.read_text()
    assert len(re.findall(r"<img class='plot'[^>]*src='data:image/png;base64,", page)) == 3
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page)  # nothing fetched
    for method in ("unpruned", "constrained", "baseline", "reorder", "ideal"):
        assert f"<th>{method} ms</th>" in page
    assert "layer4.1.conv2" in page or "copies reorder" in page
    rows = re.findall(r"<tr><td>(\d+)</td>", page)  # segment table rows
    assert len(rows) >= 5
    assert "<h2>Top-1 vs measured latency</h2>" in page and "on 100 fashion-mnist images" in page
    view = re.findall(r"<tr><td>0.7</td><td class='l'>([^<]+)</td><td>([-\d.]+)</td>", page)
    assert [v[0] for v in view] == ["default (mixed, taylor)", "constrained (l1)"]


def test_data_without_targets_is_refused(tmp_path):
    r = subprocess.run(
        [*EXE.split(), "report", "resnet18", "--data", str(tmp_path), "--html",
         str(tmp_path / "r.html")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2 and "pass --targets" in r.stderr


def test_bad_amount_for_the_detail_is_refused(tmp_path):
    r = subprocess.run(
        [*EXE.split(), "report", "resnet18", "--amounts", "0.2", "0.4", "--amount", "0.3",
         "--html", str(tmp_path / "r.html")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2 and "--amount 0.3 must be one of --amounts" in r.stderr


def chromium(*args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium_with_visible_plots(report, tmp_path):
    dom = chromium("--virtual-time-budget=5000", "--dump-dom", report.as_uri())
    assert 'data-plots="3/3"' in dom.stdout, dom.stderr[-2000:]  # every PNG decoded
    shot = tmp_path / "report.png"
    chromium("--window-size=1200,1800", f"--screenshot={shot}", report.as_uri())
    import matplotlib.image

    px = matplotlib.image.imread(shot)[..., :3]
    assert px.shape[:2] == (1800, 1200)
    blue = (np.abs(px - REORDER_BLUE).max(-1) < 0.06).sum()  # reorder line and kept bars
    assert blue > 5000, blue
    assert (px.min(-1) < 0.9).mean() > 0.05  # plenty drawn, not a blank page
    shutil.copy(shot, report.with_suffix(".png"))  # kept next to the report for a look
