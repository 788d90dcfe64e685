"""Loss curves as PNG, drawn from the CSV log that every training stage writes."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: write files only
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(csv_path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{metric name: [(step, value), ...]} from Lightning's CSVLogger metrics.csv."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            step = row.get("step")
            if not step:
                continue
            for key, value in row.items():
                if key in ("step", "epoch") or value in (None, ""):
                    continue
                series.setdefault(key, []).append((int(float(step)), float(value)))
    return series


def read_metric_rows(csv_path: str | Path, up_to_step: int) -> list[tuple[int, dict[str, float]]]:
    """(step, {metric: value}) for each row of a CSV log up to `up_to_step`, empty cells left out."""
    rows = []
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("step") or int(float(row["step"])) > up_to_step:
                continue
            values = {k: float(v) for k, v in row.items() if k != "step" and v not in (None, "")}
            rows.append((int(float(row["step"])), values))
    return rows


def plot_losses(csv_path: str | Path, out_png: str | Path, title: str) -> Path | None:
    """Plot every logged series whose name contains 'loss' (training and validation)."""
    series = {k: v for k, v in read_metrics(csv_path).items() if "loss" in k}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name, points in sorted(series.items()):
        steps, values = zip(*points)
        ax.plot(steps, values, label=name, marker="o" if len(points) < 20 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if all(v > 0 for points in series.values() for _, v in points):
        ax.set_yscale("log")
    ax.set_title(title)
    return save_figure(fig, ax, out_png)


def save_figure(fig, ax, out_png: str | Path) -> Path:
    """The project's plots end alike: a small legend, a light grid, the PNG written, the figure closed."""
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return Path(out_png)
