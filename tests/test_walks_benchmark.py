"""`python -m benchmarks walks`: each interpolation method's walk rendered through `ldm animate` on a
tiny pipeline, measured, and printed as one table with a contact sheet per method."""

from __future__ import annotations

import json
import typing

from PIL import Image

from benchmarks.__main__ import main as run_benchmark
from benchmarks.walks import interpolation_methods, prompt_attributes
from ldm.metrics.smoothness import gini, perceptual_smoothness


def test_the_gini_of_equal_steps_is_0_and_of_one_step_holding_all_is_near_1():
    assert gini([0.2, 0.2, 0.2]) == 0.0 and perceptual_smoothness([0.2, 0.2, 0.2]) == 1.0
    assert abs(gini([0.0] * 99 + [1.0]) - 0.99) < 1e-12 and gini([0, 0, 0]) == 0.0


def test_prompts_are_read_as_the_shapes_attributes():
    assert prompt_attributes("a yellow square in the bottom right") == {
        "colour": "yellow", "shape": "square", "position": "in the bottom right"}


def test_the_methods_are_the_choices_of_ldm_animate():
    from ldm.apps.animate.settings import WalkSettings

    field = WalkSettings.__dataclass_fields__.get("interpolation")
    assert interpolation_methods() == (["default"] if field is None else list(typing.get_args(
        typing.get_type_hints(WalkSettings)["interpolation"])))


def test_methods_render_measure_and_get_a_contact_sheet(tmp_path, kl_pipeline_path, capsys):
    # The first and the last method (each is a process of `ldm animate`; all of them take minutes)
    methods = sorted({interpolation_methods()[0], interpolation_methods()[-1]}, key=interpolation_methods().index)
    results = tmp_path / "walks.json"
    run_benchmark(["walks", str(kl_pipeline_path), "--methods", *methods, "--prompts", "a red circle", "a blue square",
                   "--audio", "none", "--frames", "3", "--steps", "2", "--batch-size", "2", "--threads", "1",
                   "--out", str(tmp_path / "walks"), "--json", str(results)])
    printed = capsys.readouterr().out
    result = json.loads(results.read_text())["result"]
    rows = result["methods"]
    assert not result["failed"], result["failed"]
    assert [row["method"] for row in rows] == methods
    for row in rows:
        assert row["method"] in printed and 0 <= row["smoothness"] <= 1 and row["seconds"] > 0
        assert row["fidelity"]["keyframes"] == 2 and row["frames"] == 4  # 2 segments of a loop, 3 frames each
        with Image.open(row["sheet"]) as sheet:
            assert sheet.width > 0
    assert "1-Gini" in printed and "contact sheet" in printed
