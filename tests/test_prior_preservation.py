"""DreamBooth's prior preservation (`data.prior_preservation`), through `ldm train`: the class images
are made once by the base pipeline as `ldm generate` makes them, kept in the run folder, reused (not
made again) on resume; every batch holds the configured numbers of the user's and the class images;
the loss is instance loss + weight * class loss; and a resumed run ends as an uninterrupted one."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from finetune_fixtures import base_fixture, shapes_fixture  # noqa: F401 (pytest fixtures base, shapes)
from lightning.pytorch.callbacks import Callback
from PIL import Image
from safetensors.torch import load_file
from test_finetune import finetune_config

from ldm.cli import main
from ldm.core.config import build
from ldm.core.errors import LdmError
from ldm.data.prior_datamodule import CLASS, INSTANCE
from ldm.stages.diffusion import class_images as class_images_module
from ldm.stages.diffusion.class_images import CLASS_IMAGES, METADATA, NOTE
from ldm.stages.diffusion.config import Config
from ldm.stages.diffusion.train import build_datamodule, build_module, train
from ldm.stages.trainer import fit

CLASS_PROMPT = "a shape on white"
NUM_CLASS = 3
PRIOR = {"class_prompt": CLASS_PROMPT, "num_class_images": NUM_CLASS, "batch_size": 1, "steps": 2,
         "loss_weight": 0.5, "seed": 7}


def prior_config(run, base, shapes, **train) -> dict:
    # 2 of the user's images and 1 class image a batch: 7 instance batches an epoch against 3 class ones
    return finetune_config(run, base, shapes, data={"batch_size": 2, "prior_preservation": PRIOR},
                           train={"max_steps": 6, "checkpoint_every_n_steps": 2, "val_every_n_steps": 6,
                                  "lr": 1e-2, **train})


@pytest.fixture(scope="module")
def prior_run(tmp_path_factory, base, shapes):
    """A prior-preservation run of 6 steps through `ldm train` (checkpoints at 2, 4, 6)."""
    folder = tmp_path_factory.mktemp("prior")
    config = prior_config(folder / "run", base, shapes)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["train", str(path)])
    return config, path, folder / "run"


def test_class_images_are_made_by_the_base_as_ldm_generate_makes_them(prior_run, base, tmp_path):
    _, _, run = prior_run
    folder = run / "diffusion" / CLASS_IMAGES
    names = sorted(p.name for p in folder.glob("*.png"))
    assert names == [f"{i:04d}-seed{7 + i}.png" for i in range(NUM_CLASS)]
    rows = [json.loads(line) for line in (folder / METADATA).read_text().splitlines()]
    assert rows == [{"file_name": name, "text": CLASS_PROMPT} for name in names]
    assert json.loads((folder / NOTE).read_text())["num_class_images"] == NUM_CLASS
    main(["generate", str(base), CLASS_PROMPT, "--n", str(NUM_CLASS), "--seed", "7", "--steps", "2",
          "--guidance", "5", "--out", str(tmp_path / "out")])
    for i, name in enumerate(names):
        ours = np.asarray(Image.open(folder / name))
        theirs = np.asarray(Image.open(tmp_path / "out" / f"0000-seed{7 + i}.png"))
        assert np.array_equal(ours, theirs)


def test_the_loss_is_the_instance_loss_plus_the_weighted_class_loss(prior_run):
    _, _, run = prior_run
    with open(run / "diffusion" / "csv" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("train/prior_loss")]
    assert len(rows) == 6
    for row in rows:
        expected = float(row["train/instance_loss"]) + 0.5 * float(row["train/prior_loss"])
        assert float(row["train/loss"]) == pytest.approx(expected, rel=1e-5)


class Batches(Callback):
    """Records what each training batch holds."""

    def __init__(self):
        self.sizes, self.class_embeddings = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.sizes.append((batch[INSTANCE]["embeddings"].shape[0], batch[CLASS]["embeddings"].shape[0]))
        self.class_embeddings.append(batch[CLASS]["embeddings"].cpu())


def test_each_batch_mixes_the_configured_numbers_of_instance_and_class_images(prior_run, base, shapes, tmp_path):
    config, _, run = prior_run
    cfg = build(Config, {**prior_config(tmp_path / "run", base, shapes), "train": {**config["train"], "max_steps": 4}})
    # the class images of the first run, copied: found, not made again
    import shutil

    shutil.copytree(run / "diffusion" / CLASS_IMAGES, tmp_path / "run" / "diffusion" / CLASS_IMAGES)
    module = build_module(cfg)
    batches = Batches()
    fit(cfg, module, build_datamodule(cfg, module, tmp_path / "run" / "diffusion" / CLASS_IMAGES), callbacks=[batches])
    assert batches.sizes == [(2, 1)] * 4
    # every class row is the class prompt's embedding (as the latent cache stores it, in float16)
    expected = module.conditioner.encode([CLASS_PROMPT]).cpu().half().float()
    for embeddings in batches.class_embeddings:
        torch.testing.assert_close(embeddings.float(), expected, rtol=0, atol=1e-3)


def test_resume_reuses_the_class_images_and_ends_as_the_uninterrupted_run(prior_run, tmp_path, monkeypatch, capsys):
    config, path, run = prior_run
    # From the step-4 checkpoint (4 instance batches done of 7, so the 3 class batches have gone round
    # once and one more), in a new folder: the images are made again there, the same.
    step4 = run / "diffusion" / "checkpoints" / "step00000004.ckpt"
    resumed = train(build(Config, {**config, "run_dir": str(tmp_path / "run"),
                                   "train": {**config["train"], "ckpt_path": str(step4)}}))
    assert resumed.trainer.global_step == 6
    whole = load_file(run / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    split = load_file(resumed.export / "unet" / "diffusion_pytorch_model.safetensors")
    for key in whole:
        torch.testing.assert_close(whole[key], split[key], rtol=0, atol=1e-6)

    # `ldm train --resume` in the run's own folder finds its class images: nothing is made again.
    stamps = {p.name: p.stat().st_mtime_ns for p in (run / "diffusion" / CLASS_IMAGES).iterdir()}

    def refuse(*args, **kwargs):
        raise AssertionError("the class images were made again")

    monkeypatch.setattr(class_images_module, "make_class_images", refuse)
    capsys.readouterr()
    main(["train", str(path), "train.max_steps=7", "--resume"])
    assert f"reusing the {NUM_CLASS} class images" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (run / "diffusion" / CLASS_IMAGES).iterdir()} == stamps


def test_a_changed_class_prompt_makes_the_class_images_again(prior_run, base, shapes, tmp_path):
    _, _, run = prior_run
    import shutil

    shutil.copytree(run / "diffusion" / CLASS_IMAGES, tmp_path / "run" / "diffusion" / CLASS_IMAGES)
    changed = prior_config(tmp_path / "run", base, shapes)
    changed["data"]["prior_preservation"] = {**PRIOR, "class_prompt": "a circle", "num_class_images": 2}
    folder = class_images_module.prepare_class_images(build(Config, changed), Path(base))
    assert sorted(p.name for p in folder.glob("*.png")) == ["0000-seed7.png", "0001-seed8.png"]
    assert json.loads((folder / NOTE).read_text())["class_prompt"] == "a circle"


def test_prior_preservation_mistakes_are_named(tmp_path, base, shapes):
    no_base = finetune_config(tmp_path, base, shapes, pretrained=None, vae=str(base / "vae"), text_encoder=str(base),
                              data={"prior_preservation": PRIOR})
    with pytest.raises(LdmError, match="data.prior_preservation needs `pretrained:`"):
        build(Config, no_base)
    for key, value in (("class_prompt", ""), ("loss_weight", -1), ("num_class_images", 0)):
        with pytest.raises(LdmError, match=f"data.prior_preservation.{key}"):
            build(Config, finetune_config(tmp_path, base, shapes,
                                          data={"prior_preservation": {**PRIOR, key: value}}))
    with pytest.raises(LdmError, match="data.prior_preservation needs data.streaming: false"):
        build(Config, finetune_config(tmp_path, base, shapes, cache=False,
                                      data={"prior_preservation": PRIOR, "streaming": True}))
