"""The HTML report: self-contained, relative paths, and every picture loads in a real browser."""

from __future__ import annotations

import html
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from ldm.apps.animate.video import write_gif
from ldm.apps.report import ReportContent, find_loss_curves, write_report
from ldm.metrics.results import Evaluation, Metric
from ldm.stages.plots import plot_losses

BROWSERS = ("chromium", "chromium-browser")
# Appended to a copy of the report: after every image has settled, each gets data-ok="1" or "0".
CHECK_SCRIPT = """<script>
window.addEventListener("load", () => {
  for (const img of document.images) img.dataset.ok = img.complete && img.naturalWidth > 0 ? "1" : "0";
  document.body.dataset.checked = "1";
});
</script>"""


def make_run(root):
    """A RUN with two stages' CSV logs (one with its loss.png, one without), pictures and figures."""
    run = root / "run"
    for stage, steps in (("autoencoder", 5), ("diffusion", 8)):
        csv = run / stage / "csv" / "metrics.csv"
        csv.parent.mkdir(parents=True)
        csv.write_text("epoch,step,train/loss\n" + "".join(f"0,{s},{1 / (s + 1)}\n" for s in range(steps)))
    plot_losses(run / "autoencoder" / "csv" / "metrics.csv", run / "autoencoder" / "loss.png", "autoencoder")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)).save(root / "grid.png")
    Image.fromarray(rng.integers(0, 255, (32, 128, 3), dtype=np.uint8)).save(root / "recon.png")
    write_gif([rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(4)], root / "walk.gif", 4)
    evaluation = Evaluation("diffusion", str(run / "pipeline"), {},
                            [Metric("prompt_fidelity", "Prompt fidelity <colour & shape>", 0.95 * 100, "%", "higher"),
                             Metric("fid_clip", "FID (CLIP features)", 0.12, "", "lower", "on CLIP")])
    return run, ReportContent(title="test run", intro="a report <for> tests", samples=root / "grid.png",
                              reconstructions=root / "recon.png", animation=root / "walk.gif",
                              loss_curves=find_loss_curves(run), evaluations=[evaluation],
                              steps=[("data", "ran in 1 s", "data/")])


def image_sources(page: str) -> list[str]:
    return [html.unescape(src) for src in re.findall(r'<img src="([^"]+)"', page)]


def test_report_copies_pictures_beside_it_and_links_them_relatively(tmp_path):
    run, content = make_run(tmp_path)
    assert set(content.loss_curves) == {"autoencoder", "diffusion"}
    assert (run / "diffusion" / "loss.png").is_file()  # drawn from the CSV, as training would have
    report = write_report(content, tmp_path / "out" / "report.html")
    page = report.read_text()
    sources = image_sources(page)
    assert len(sources) == 5  # samples, reconstructions, animation, two loss curves
    for src in sources:
        assert not src.startswith(("/", "file:", "http")), src
        assert (report.parent / src).is_file(), src
    assert "walk.gif" in " ".join(sources)
    assert "95.0 %" in page and "FID (CLIP features)" in page
    assert "&lt;colour &amp; shape&gt;" in page and "<script" not in page  # text is escaped; no scripts
    shutil.rmtree(run)  # the report keeps its own copies
    assert all((report.parent / src).is_file() for src in sources)


def test_missing_pictures_are_said_not_broken(tmp_path):
    report = write_report(ReportContent(title="empty", samples=tmp_path / "none.png"), tmp_path / "r.html")
    page = report.read_text()
    assert image_sources(page) == []
    assert "not produced by this run" in page


def find_browser() -> str | None:
    return next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)


@pytest.mark.skipif(find_browser() is None,
                    reason="headless Chromium not installed (Debian: apt-get install chromium)")
def test_every_image_loads_in_headless_chromium(tmp_path):
    _, content = make_run(tmp_path)
    report = write_report(content, tmp_path / "out" / "report.html")
    checked = report.with_name("report-check.html")  # same folder: the same relative paths
    checked.write_text(report.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    dom = subprocess.run(
        [find_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=10000", "--dump-dom", checked.as_uri()],
        capture_output=True, text=True, timeout=120).stdout
    assert 'data-checked="1"' in dom, dom[:500]
    flags = re.findall(r'<img[^>]*data-ok="([01])"', dom)
    assert len(flags) == len(image_sources(report.read_text())) == 5
    broken = [src for src, ok in zip(re.findall(r'<img src="([^"]+)"', dom), flags) if ok != "1"]
    assert not broken, f"images that did not load: {broken}"
