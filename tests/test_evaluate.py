"""`ldm evaluate`: each kind's figures, the JSON schema, the printed table, and early errors."""

from __future__ import annotations

import json
import re

import pytest
from eval_fixtures import check_schema, make_eval_run
from PIL import Image
from tiny import make_tiny_pipeline

from ldm.apps.animate.render import animate
from ldm.apps.animate.settings import WalkSettings
from ldm.apps.evaluate import evaluate, evaluate_autoencoder, evaluate_diffusion, evaluate_walk
from ldm.apps.evaluate.settings import AutoencoderEvaluation, DiffusionEvaluation
from ldm.cli import main
from ldm.core.errors import LdmError
from ldm.data.shapes.generator import HELD_OUT
from ldm.metrics.results import Evaluation, Metric, read_json, to_json, write_json
from ldm.sampling.samplers import DEFAULT_SAMPLER


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return make_eval_run(root), root / "shapes"


def test_autoencoder_cli_prints_a_table_and_writes_schema_json(run, tmp_path, capsys):
    run_dir, data = run
    out, grid = tmp_path / "ae.json", tmp_path / "grid.png"
    main(["evaluate", "autoencoder", str(run_dir / "pipeline" / "vae"), "--data", str(data),
          "--out", str(out), "--grid", str(grid)])
    printed = capsys.readouterr().out
    assert "PSNR" in printed and "SSIM" in printed and "dB" in printed
    item = json.loads(out.read_text())
    check_schema(item)
    assert item["kind"] == "autoencoder" and item["settings"]["images"] == 16
    # on the shapes data, also the checker on the reconstructions (the ceiling of a pipeline's fidelity)
    # and how crisp the reconstructions are against the originals (the ceiling of the samples')
    assert [m["key"] for m in item["metrics"]] == ["psnr", "ssim", "sharpness", "reconstruction_fidelity"]
    assert item["metrics"][2]["value"] > 0 and "reconstructions" in item["metrics"][2]["name"]
    assert 0 <= item["metrics"][3]["value"] <= 100
    assert grid.is_file()  # originals over reconstructions


def test_vq_autoencoder_reports_codebook_usage(vq_pipeline_path, run):
    _, data = run
    result = evaluate_autoencoder(str(vq_pipeline_path / "vae"), str(data), max_images=8)
    check_schema(json.loads(to_json(result)))
    assert 0 < result.value("codebook_usage") <= 100
    assert result.value("codebook_perplexity") >= 1


def test_diffusion_reports_fidelity_clip_score_and_clip_feature_fid(run, tmp_path):
    run_dir, data = run
    result = evaluate_diffusion(str(run_dir / "pipeline"), str(data), n=1, steps=1, samples=tmp_path / "s")
    item = json.loads(to_json(result))
    check_schema(item)
    keys = [m["key"] for m in item["metrics"]]
    assert keys[0] == "prompt_fidelity"
    # no Inception weights: FID/KID on the project's CLIP, and labelled so, never as plain "FID"
    assert {"clip_score", "fid_clip", "kid_clip"} <= set(keys) and "fid" not in keys
    names = {m["key"]: m["name"] for m in item["metrics"]}
    assert names["fid_clip"] == "FID (CLIP features)"
    assert result.value("real_fidelity") == 100.0  # the checker reads the real held-out images
    assert item["settings"]["clip"].endswith("clip")  # RUN/clip beside RUN/pipeline, found by default
    assert len(list((tmp_path / "s").glob("0*-seed*.png"))) == len(HELD_OUT)
    # scoring the images already there gives the same fidelity
    again = evaluate_diffusion(str(run_dir / "pipeline"), str(data), n=1, steps=1, samples=tmp_path / "s",
                               generate=False)
    assert again.value("prompt_fidelity") == result.value("prompt_fidelity")


def test_diffusion_samples_with_the_sampler_asked_for(run, tmp_path, capsys):
    """--sampler reaches the images (their PNG metadata) and the JSON's settings; by default the
    pipeline's own sampler; a wrong name is one line before anything is generated."""
    run_dir, data = run
    out = tmp_path / "ddim.json"
    main(["evaluate", "diffusion", str(run_dir / "pipeline"), "--data", str(data), "--n", "1", "--steps", "1",
          "--sampler", "ddim", "--samples", str(tmp_path / "ddim"), "--out", str(out)])
    assert json.loads(out.read_text())["settings"]["sampler"] == "ddim"
    assert {Image.open(p).text["sampler"] for p in (tmp_path / "ddim").glob("0*-seed*.png")} == {"ddim"}
    default = evaluate_diffusion(str(run_dir / "pipeline"), str(data), n=1, steps=1, samples=tmp_path / "default")
    assert default.settings["sampler"] == DEFAULT_SAMPLER  # the name the images were made with
    assert {Image.open(p).text["sampler"] for p in (tmp_path / "default").glob("0*-seed*.png")} == {DEFAULT_SAMPLER}
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["evaluate", "diffusion", str(run_dir / "pipeline"), "--data", str(data), "--sampler", "fast",
              "--samples", str(tmp_path / "never")])
    assert "unknown sampler 'fast'" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_walk_smoothness_from_a_rendered_walk(run, tmp_path, capsys):
    run_dir, _ = run
    folder = tmp_path / "walk"
    animate(WalkSettings(pipeline=str(run_dir / "pipeline"), out=str(folder),
                         prompts=["a red circle", "a blue square"], frames=3, steps=1))
    out = tmp_path / "walk.json"
    main(["evaluate", "walk", str(folder), "--out", str(out)])
    assert "Motion unevenness" in capsys.readouterr().out
    item = json.loads(out.read_text())
    check_schema(item)
    assert item["settings"]["frames"] == 3
    values = {m["key"]: m["value"] for m in item["metrics"]}
    assert values["walk_frames"] == 3
    # the figures are those of the frames on disk, as ldm animate measured them when it rendered
    rendered = json.loads((folder / "smoothness.json").read_text())["walk"]
    assert values["walk_cv"] == pytest.approx(rendered["cv"])
    assert values["walk_mean_step"] == pytest.approx(rendered["mean"]) and rendered["mean"] > 0


def test_errors_name_the_problem_before_work(run, tmp_path):
    run_dir, data = run
    with pytest.raises(LdmError, match="pipeline folder not found"):
        evaluate_diffusion(str(tmp_path / "nope"), str(data))
    with pytest.raises(LdmError, match="data folder not found"):
        evaluate_diffusion(str(run_dir / "pipeline"), str(tmp_path / "nodata"))
    with pytest.raises(LdmError, match="no CLIP model"):
        evaluate_diffusion(str(run_dir / "pipeline"), str(data), clip=str(tmp_path))
    with pytest.raises(LdmError, match="not a walk folder"):
        evaluate_walk(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "autoencoder", str(tmp_path / "novae"), "--data", str(data)])
    assert exit_info.value.code == 2


def test_outputs_never_replace_earlier_files_or_land_in_inputs(run, tmp_path):
    """An --out that exists, --grid and --out one file, a --grid in the data, --samples with images in
    it: each refused in one line before anything loads, and nothing written."""
    run_dir, data = run
    vae, earlier, new = str(run_dir / "pipeline" / "vae"), tmp_path / "earlier.json", str(tmp_path / "new.json")
    earlier.write_text("{}")
    for said, outputs in (("--out .* already exists", {"out": str(earlier)}),
                          ("--grid and --out name the same file", {"out": new, "grid": new}),
                          ("--grid .* is inside the data", {"grid": str(data / "grid.png")})):
        with pytest.raises(LdmError, match=said):
            evaluate(AutoencoderEvaluation(vae=vae, data=str(data), **outputs))
    samples = tmp_path / "samples"
    samples.mkdir()
    Image.new("RGB", (4, 4)).save(samples / "mine.png")
    with pytest.raises(LdmError, match="--samples .* already holds"):
        evaluate(DiffusionEvaluation(pipeline=str(run_dir / "pipeline"), data=str(data), samples=str(samples)))
    assert earlier.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["earlier.json", "samples"]
    assert not (data / "grid.png").exists()


def test_evaluate_options_are_checked_by_their_settings():
    with pytest.raises(LdmError, match="--max-images must be at least 1, got 0"):
        AutoencoderEvaluation(vae="v", data="d", max_images=0)
    with pytest.raises(LdmError, match="--guidance must be at least 1, got 0.5"):
        DiffusionEvaluation(pipeline="p", data="d", guidance=0.5)


def test_json_round_trip_and_infinite_values_become_null(tmp_path):
    result = Evaluation("autoencoder", "vae", {"images": 1},
                        [Metric("psnr", "PSNR", float("inf"), "dB", "higher"), Metric("ssim", "SSIM", 1.0)])
    path = write_json([result, result], tmp_path / "e.json")
    items = json.loads(path.read_text())
    assert len(items) == 2
    for item in items:
        check_schema(item)
    assert items[0]["metrics"][0]["value"] is None
    assert read_json(path)[0].value("ssim") == 1.0


def test_diffusion_on_other_data_prompts_with_its_captions(run, tmp_path):
    """Data without the shapes attributes: no prompt fidelity; prompts are the split's captions,
    and the real images are scored against their own captions."""
    run_dir, _ = run
    data = tmp_path / "mine"  # a folder of images with a caption .txt beside each
    data.mkdir()
    pictures = [((200, 30, 30), "a red thing"), ((30, 30, 200), "a blue thing"),
                ((30, 200, 30), "a green thing"), ((200, 30, 30), "a red thing")]
    for i, (colour, caption) in enumerate(pictures):
        Image.new("RGB", (20, 20), colour).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text(caption)
    result = evaluate_diffusion(str(run_dir / "pipeline"), str(data), n=1, steps=1)
    check_schema(json.loads(to_json(result)))
    keys = [m.key for m in result.metrics]
    assert "prompt_fidelity" not in keys and {"clip_score", "real_clip_score", "fid_clip"} <= set(keys)
    assert result.settings["prompts"] == 3 and "captions" in result.settings["prompts_from"]


def test_diffusion_cli_reads_a_prompts_file(run, tmp_path, capsys):
    run_dir, data = run
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle in the center\n\na blue square in the top left\n")
    out = tmp_path / "d.json"
    main(["evaluate", "diffusion", str(run_dir / "pipeline"), "--data", str(data), "--n", "1", "--steps", "1",
          "--prompts-file", str(prompts), "--out", str(out)])
    item = json.loads(out.read_text())
    assert item["settings"]["prompts"] == 2 and item["settings"]["prompts_from"] == "given"
    assert "prompt_fidelity" not in [m["key"] for m in item["metrics"]]  # the checker needs held-out prompts
    with pytest.raises(SystemExit):
        main(["evaluate", "diffusion", str(run_dir / "pipeline"), "--data", str(data),
              "--prompts-file", str(tmp_path / "none.txt")])
    assert re.search(r"--prompts-file \S*none\.txt: no such file", capsys.readouterr().err)


def test_nothing_to_measure_is_said_before_generating(run, tmp_path):
    """Given prompts (no prompt fidelity) and no CLIP beside the pipeline: an error, no images made."""
    _, data = run
    bare = make_tiny_pipeline(tmp_path / "bare")  # no RUN/clip beside it
    with pytest.raises(LdmError, match="nothing to measure"):
        evaluate_diffusion(str(bare), str(data), n=1, steps=1, samples=tmp_path / "s", prompts=["a red circle"])
    assert not (tmp_path / "s").exists()
