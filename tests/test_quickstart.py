"""`ldm quickstart --tiny`: every step end to end (about a minute on a quiet 2-core machine), and a
rerun skips them all."""

from __future__ import annotations

import json

import pytest
from eval_fixtures import check_schema

from ldm.apps.quickstart import DONE_DIR
from ldm.cli import main

STEPS = ["data", "autoencoder", "clip", "diffusion", "samples", "walk", "evaluate"]


@pytest.mark.slow
def test_tiny_quickstart_runs_every_step_then_skips_them(tmp_path, capsys):
    out = tmp_path / "qs"
    main(["quickstart", str(out), "--tiny"])
    printed = capsys.readouterr().out
    for number, step in enumerate(STEPS, 1):
        assert f"[{number}] {step}: done in" in printed, step
        assert (out / DONE_DIR / f"{step}.json").is_file()
    for export in ("vae", "clip", "text_encoder", "tokenizer", "pipeline"):
        assert (out / export).is_dir(), export
    assert (out / "samples" / "grid.png").is_file() and (out / "walk" / "walk.gif").is_file()
    items = json.loads((out / "evaluation.json").read_text())
    assert [item["kind"] for item in items] == ["autoencoder", "diffusion", "walk"]
    for item in items:
        check_schema(item)
    page = (out / "report.html").read_text()
    for picture in ("samples.png", "reconstructions.png", "walk.gif", "motion.png", "loss-autoencoder.png",
                    "loss-clip_training.png", "loss-diffusion.png"):
        assert f"report_files/{picture}" in page, picture
        assert (out / "report_files" / picture).is_file(), picture

    report = out / "report.html"
    report.unlink()
    main(["quickstart", str(out), "--tiny"])
    printed = capsys.readouterr().out
    for number, step in enumerate(STEPS, 1):
        assert f"[{number}] {step}: already done, skipped" in printed, step
    assert "training" not in printed and "generating" not in printed
    assert report.is_file()  # the report is always written again
    assert "done earlier, took" in report.read_text()


def test_a_changed_step_reruns_it_and_the_steps_after_it(tmp_path):
    """Only the fingerprint logic: the data step's settings change, so it reruns (nothing trains)."""
    from ldm.apps import quickstart

    run = quickstart.Quickstart(tmp_path, quickstart.SCALES["tiny"])
    ran = []
    run.step("data", {"n": 1}, [], [], "first", lambda: ran.append("data"))
    run.step("next", {}, ["data"], [], "after data", lambda: ran.append("next"))
    again = quickstart.Quickstart(tmp_path, quickstart.SCALES["tiny"])
    again.step("data", {"n": 1}, [], [], "first", lambda: ran.append("data"))
    again.step("next", {}, ["data"], [], "after data", lambda: ran.append("next"))
    assert ran == ["data", "next"]  # the second time, both were skipped
    changed = quickstart.Quickstart(tmp_path, quickstart.SCALES["tiny"])
    changed.step("data", {"n": 2}, [], [], "first", lambda: ran.append("data"))
    changed.step("next", {}, ["data"], [], "after data", lambda: ran.append("next"))
    assert ran == ["data", "next", "data", "next"]  # data changed, and `next` reads it
    missing = quickstart.Quickstart(tmp_path, quickstart.SCALES["tiny"])
    missing.step("data", {"n": 2}, [], [tmp_path / "gone"], "first", lambda: ran.append("data"))
    assert ran[-1] == "data" and len(ran) == 5  # an output that disappeared is made again


def test_an_interrupted_stage_resumes_and_a_changed_one_starts_over(tmp_path):
    import yaml

    from ldm.apps.quickstart import STAGE_CONFIGS, _prepare_stage_dir
    from ldm.core.config import packaged_configs, to_dict
    from ldm.stages.registry import load_config
    from ldm.stages.run_config import comparable_config

    cfg = load_config(packaged_configs() / STAGE_CONFIGS["autoencoder"], [f"run_dir={tmp_path}"])
    cfg.checkpoint_dir.mkdir(parents=True)
    (cfg.checkpoint_dir / "last.ckpt").write_bytes(b"")
    (cfg.stage_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    _prepare_stage_dir(cfg, comparable_config(cfg))
    assert cfg.train.ckpt_path == "last" and (cfg.checkpoint_dir / "last.ckpt").exists()
    # How to resume is no part of the run, as the checkpoints' record has it: still the same run.
    resuming = load_config(packaged_configs() / STAGE_CONFIGS["autoencoder"],
                           [f"run_dir={tmp_path}", "train.accept_changes=[train.lr]"])
    _prepare_stage_dir(resuming, comparable_config(resuming))
    assert resuming.train.ckpt_path == "last" and (cfg.checkpoint_dir / "last.ckpt").exists()

    changed = load_config(packaged_configs() / STAGE_CONFIGS["autoencoder"], [f"run_dir={tmp_path}", "train.lr=0.5"])
    _prepare_stage_dir(changed, comparable_config(changed))
    assert changed.train.ckpt_path is None and not changed.checkpoint_dir.exists()


def test_a_stage_trained_side_by_side_that_fails_is_named_with_its_log(tmp_path, monkeypatch):
    """The lanes (here the autoencoder then the UNet, and the CLIP) train in child processes: a failure names
    the stage, its log and the log's last line, and is not recorded as done; the stage after it in
    its lane (which reads it) does not start; the other lane finishes and is recorded."""
    from ldm.apps import quickstart
    from ldm.core.errors import LdmError

    run = quickstart.Quickstart(tmp_path, quickstart.SCALES["tiny"])
    run.data()
    overrides, nowhere = run.stage_overrides, f"data.source={tmp_path / 'nowhere'}"
    monkeypatch.setattr(run, "stage_overrides",
                        lambda name: overrides(name) + ([nowhere] if name == "autoencoder" else []))
    failed = r"training failed: autoencoder \(log: .*train\.log: ldm train: error: .*nowhere"
    with pytest.raises(LdmError, match=failed):
        run.stages_side_by_side([
            [("autoencoder", ["data"], ["vae/config.json"], "training the autoencoder"),
             ("diffusion", ["autoencoder"], ["pipeline/model_index.json"], "training the UNet")],
            [("clip", ["data"], ["clip/config.json"], "training the CLIP")]])
    done = tmp_path / DONE_DIR
    assert not (done / "autoencoder.json").exists() and not (done / "diffusion.json").exists()
    assert not (tmp_path / "diffusion").exists()  # never started
    assert (done / "clip.json").exists() and (tmp_path / "clip" / "config.json").exists()
