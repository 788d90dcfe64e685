"""An HTML report of a run that a person opens in a browser: samples, reconstructions, the walk,
loss curves and the evaluation table.

    write_report(ReportContent(title=..., samples=..., ...), "quickstart/report.html")

The page is one HTML file with its style inline and no scripts; every picture it shows is copied
into a folder beside it (`report_files/`) and referenced by a relative path, so the file and that
folder can be moved, zipped or served anywhere together, and later runs that overwrite the run's
own files do not change a report already written.
"""

from __future__ import annotations

import html
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ldm.core.atomic import atomic_write_bytes
from ldm.core.layout import LOSS_PLOT, METRICS_CSV
from ldm.metrics.results import Evaluation, table_rows
from ldm.stages.plots import plot_losses

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; margin-top: 0.3em; }
img { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
.curves { display: flex; flex-wrap: wrap; gap: 1em; } .curves figure { flex: 0 1 48%; margin: 0; }
table { border-collapse: collapse; font-size: 0.92em; } td, th { border-bottom: 1px solid #e5e5e5;
  padding: 0.35em 0.8em; text-align: left; vertical-align: top; } td.value { text-align: right;
  white-space: nowrap; font-variant-numeric: tabular-nums; } td.note { color: #666; }
.missing { color: #a33; } .headline { font-size: 1.1em; line-height: 1.6; }
"""


@dataclass
class ReportContent:
    title: str
    intro: str = ""  # one paragraph under the title (plain text)
    samples: Path | None = None  # the sample grid (contact sheet)
    samples_caption: str = ""
    reconstructions: Path | None = None  # originals over reconstructions
    animation: Path | None = None  # the walk's GIF
    animation_caption: str = ""
    motion_plot: Path | None = None  # a walk to music: its frame distance against the audio target
    loss_curves: dict[str, Path] = field(default_factory=dict)  # stage -> PNG
    headline: list[tuple[str, str, str]] = field(default_factory=list)  # (evaluated, figure, value) shown first
    evaluations: list[Evaluation] = field(default_factory=list)
    steps: list[tuple[str, str, str]] = field(default_factory=list)  # (step, what happened, where)


def find_loss_curves(run_dir: str | Path) -> dict[str, Path]:
    """stage folder name -> loss plot, for every stage folder of RUN that has a CSV log.

    The stage's loss.png, redrawn from its metrics.csv when missing or older than the log (a run
    stopped before the end of training has no plot yet).
    """
    curves = {}
    for stage_dir in sorted(p for p in Path(run_dir).iterdir() if (p / METRICS_CSV).is_file()):
        csv, png = stage_dir / METRICS_CSV, stage_dir / LOSS_PLOT
        if not png.is_file() or png.stat().st_mtime < csv.stat().st_mtime:
            png = plot_losses(csv, png, f"{stage_dir.name} losses")
        if png is not None:
            curves[stage_dir.name] = Path(png)
    return curves


class _Assets:
    """Copies the pictures into the folder beside the report, under unique names."""

    def __init__(self, folder: Path):
        self.folder = folder
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)

    def add(self, path: Path, name: str) -> str:
        target = self.folder / f"{name}{path.suffix.lower()}"
        shutil.copyfile(path, target)
        return f"{self.folder.name}/{target.name}"


def _figure(assets: _Assets, path: Path | None, name: str, alt: str, caption: str = "") -> str:
    if path is None or not Path(path).is_file():
        return f'<p class="missing">{html.escape(alt)}: not produced by this run.</p>'
    src = assets.add(Path(path), name)
    text = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{html.escape(src)}" alt="{html.escape(alt)}">{text}</figure>'


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], value_column: int | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="value"' if i == value_column else (' class="note"' if i == len(row) - 1 else "")
            cells.append(f"<td{cls}>{html.escape(str(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(content: ReportContent, assets: _Assets) -> str:
    parts = [f"<h1>{html.escape(content.title)}</h1>"]
    if content.intro:
        parts.append(f"<p>{html.escape(content.intro)}</p>")
    if content.headline:
        items = "".join(f"<li>{html.escape(figure)} ({html.escape(kind)}): <b>{html.escape(value)}</b></li>"
                        for kind, figure, value in content.headline)
        parts.append(f'<ul class="headline">{items}</ul>')
    if content.evaluations:
        parts += ["<h2>Evaluation</h2>",
                  _table(("evaluated", "figure", "value", "better", "how"), table_rows(content.evaluations),
                         value_column=2)]
    parts += ["<h2>Samples</h2>", _figure(assets, content.samples, "samples", "sample grid", content.samples_caption),
              "<h2>Reconstructions</h2>",
              _figure(assets, content.reconstructions, "reconstructions", "reconstructions",
                      "top row: real images the autoencoder never trained on; bottom row: their reconstructions"),
              "<h2>Animation</h2>",
              _figure(assets, content.animation, "walk", "walk animation", content.animation_caption),
              _figure(assets, content.motion_plot, "motion", "motion against the audio",
                      "how far each frame moved (frame-to-frame distance) against how far the audio said it "
                      "should: louder, busier passages move further") if content.motion_plot else "",
              "<h2>Loss curves</h2>", '<div class="curves">']
    parts += [_figure(assets, png, f"loss-{stage}", f"{stage} loss curves", stage)
              for stage, png in content.loss_curves.items()] or ['<p class="missing">no training logs found.</p>']
    parts.append("</div>")
    if content.steps:
        parts += ["<h2>Steps</h2>", _table(("step", "what happened", "output"), content.steps)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(content.title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def write_report(content: ReportContent, out_html: str | Path) -> Path:
    """Write the report and, beside it, <name>_files/ with its pictures; returns the HTML path."""
    out_html = Path(out_html)
    assets = _Assets(out_html.with_name(f"{out_html.stem}_files"))
    atomic_write_bytes(out_html, render_html(content, assets).encode())
    return out_html
