"""What `ldm evaluate` writes: the JSON schema, the file, and the printed table.

The JSON file (`--out`) holds one evaluation, or a list of them (the quickstart writes all of its
evaluations in one file). One evaluation is an object with exactly these keys:

    schema    int     SCHEMA_VERSION (1); a reader should check it
    kind      str     "autoencoder" | "diffusion" | "inpainting" | "walk"
    target    str     the folder evaluated (RUN/vae, RUN/pipeline, a walk folder)
    settings  object  what the figures depend on: data, split, number of images, seeds, steps ...
    metrics   array   one object per figure, in the order of the printed table:
        key     str          stable identifier, e.g. "psnr", "fid_clip", "prompt_fidelity_colour_and_shape"
        name    str          as shown to a person, e.g. "FID (CLIP features)"
        value   number|null  null when the figure cannot be a JSON number (PSNR of a perfect copy: +inf)
        unit    str          "dB", "%", or "" for none
        better  str          "higher" | "lower" | "" (for descriptive figures such as a frame count)
        note    str          how it was measured, in one sentence ("" if nothing to add)
    seconds   number  wall time of the evaluation

Figures measured on something other than the standard network say so in their name and key
(FID on the project's CLIP features is "FID (CLIP features)", key "fid_clip"; on Inception, "FID").
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ldm.core.atomic import atomic_write_bytes

SCHEMA_VERSION = 1
BETTER = ("higher", "lower", "")


@dataclass
class Metric:
    key: str
    name: str
    value: float | None
    unit: str = ""
    better: str = ""
    note: str = ""

    def __post_init__(self):
        if self.value is not None:
            self.value = float(self.value)
            if not math.isfinite(self.value):
                self.value = None  # JSON has no inf or nan; `note` says why it is missing
        if self.better not in BETTER:
            raise ValueError(f"Metric.better must be one of {BETTER}, got {self.better!r}")


@dataclass
class Evaluation:
    kind: str
    target: str
    settings: dict = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)
    seconds: float = 0.0
    schema: int = SCHEMA_VERSION

    def value(self, key: str) -> float | None:
        """The value of the metric `key` (KeyError if it was not measured)."""
        for metric in self.metrics:
            if metric.key == key:
                return metric.value
        raise KeyError(key)


def to_json(evaluations: Evaluation | list[Evaluation]) -> str:
    if isinstance(evaluations, Evaluation):
        return json.dumps(asdict(evaluations), indent=2) + "\n"
    return json.dumps([asdict(e) for e in evaluations], indent=2) + "\n"


def write_json(evaluations: Evaluation | list[Evaluation], path: str | Path) -> Path:
    atomic_write_bytes(path, to_json(evaluations).encode())
    return Path(path)


def read_json(path: str | Path) -> list[Evaluation]:
    """Evaluations from a file written by `write_json` (one or a list)."""
    data = json.loads(Path(path).read_text())
    items = data if isinstance(data, list) else [data]
    return [Evaluation(**{**item, "metrics": [Metric(**m) for m in item["metrics"]]}) for item in items]


def format_value(metric: Metric) -> str:
    if metric.value is None:
        return "n/a"
    value = metric.value
    if metric.unit == "%":
        return f"{value:.1f} %"
    text = f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    return f"{text} {metric.unit}".strip()


def table_rows(evaluations: list[Evaluation]) -> list[tuple[str, str, str, str, str]]:
    """(evaluated, figure, value, better, how) for each metric: what the table and the report show."""
    return [(e.kind, m.name, format_value(m), m.better, m.note)
            for e in evaluations for m in e.metrics]


def format_table(evaluations: list[Evaluation]) -> str:
    """A plain-text table: one line per figure (the notes are in the JSON and the report)."""
    rows = [("evaluated", "figure", "value", "better")] + [row[:4] for row in table_rows(evaluations)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    def line(row):  # values right-aligned, the rest left-aligned
        return "  ".join(c.rjust(w) if i == 2 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))

    lines = [line(row).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
