"""`--vae`: generating and animating with a fine-tuned decoder instead of the pipeline's own, the same
images as a pipeline exported with it; an autoencoder with other latents refused, another encoder
warned about, and a walk folder that knows which decoder drew it."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image

from ldm.cli import main
from ldm.sampling.pipeline_io import export_pipeline, load_pipeline

GENERATE = ["--steps", "2", "--n", "2", "--seed", "3"]


def saved_vae(pipeline, folder, change) -> str:
    """The pipeline's autoencoder with `change(vae)` applied, saved in `folder`."""
    vae = AutoencoderKL.from_pretrained(pipeline / "vae")
    with torch.no_grad():
        change(vae)
    vae.save_pretrained(folder, safe_serialization=True)
    return str(folder)


@pytest.fixture(scope="module")
def new_decoder(kl_pipeline_path, tmp_path_factory):
    """What a train.decoder_only run exports: the same encoder, another decoder."""
    return saved_vae(kl_pipeline_path, tmp_path_factory.mktemp("decoder"),
                     lambda vae: vae.decoder.conv_out.weight.mul_(0.5))


def pixels(folder) -> list[np.ndarray]:
    return [np.asarray(Image.open(path)) for path in sorted(folder.glob("0000-seed*.png"))]


def test_generate_with_a_new_decoder_draws_what_a_pipeline_exported_with_it_draws(kl_pipeline_path, new_decoder,
                                                                                  tmp_path):
    parts = load_pipeline(kl_pipeline_path)
    exported = export_pipeline(tmp_path / "exported", vae=AutoencoderKL.from_pretrained(new_decoder),
                               text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
                               scheduler=parts.scheduler)
    main(["generate", str(kl_pipeline_path), "a red circle", *GENERATE, "--vae", new_decoder, "--out",
          str(tmp_path / "swapped")])
    main(["generate", str(exported), "a red circle", *GENERATE, "--out", str(tmp_path / "reference")])
    main(["generate", str(kl_pipeline_path), "a red circle", *GENERATE, "--out", str(tmp_path / "own")])
    swapped, reference, own = (pixels(tmp_path / name) for name in ("swapped", "reference", "own"))
    assert len(swapped) == 2 and all(np.array_equal(a, b) for a, b in zip(swapped, reference))
    assert not np.array_equal(swapped[0], own[0])


def test_an_autoencoder_with_other_latents_is_refused_in_one_line(kl_pipeline_path, tmp_path, capsys):
    other = saved_vae(kl_pipeline_path, tmp_path / "other", lambda vae: vae.register_to_config(scaling_factor=0.5))
    for command in (["generate", str(kl_pipeline_path), "a red circle"],
                    ["animate", str(kl_pipeline_path), "--prompts", "a", "b", "--out", str(tmp_path / "walk")]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--vae", other])
        assert exit_info.value.code == 2
        assert "scaling_factor differs from the pipeline's autoencoder" in capsys.readouterr().err
    assert not (tmp_path / "walk").exists()  # refused before anything was written


def test_another_encoder_is_warned_about(kl_pipeline_path, new_decoder, tmp_path):
    other_encoder = saved_vae(kl_pipeline_path, tmp_path / "encoder", lambda vae: vae.encoder.conv_in.weight.mul_(2))
    with pytest.warns(UserWarning, match="its encoder differs"):
        load_pipeline(kl_pipeline_path, vae=other_encoder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a decoder-only fine-tune keeps the encoder: no warning
        load_pipeline(kl_pipeline_path, vae=new_decoder)


def test_a_walk_remembers_its_decoder(kl_pipeline_path, new_decoder, tmp_path, capsys):
    walk = ["animate", str(kl_pipeline_path), "--prompts", "a red circle", "a blue square", "--frames", "3",
            "--steps", "2", "--linear", "--out", str(tmp_path / "walk")]
    main([*walk, "--vae", new_decoder])
    saved = json.loads((tmp_path / "walk" / "settings.json").read_text())
    assert saved["vae"]["path"] == str(Path(new_decoder).resolve())
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(walk)  # the same walk folder without the decoder: other frames
    assert "vae differ" in capsys.readouterr().err
