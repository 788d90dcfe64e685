"""Stage-1 and stage-1b stand-ins for the diffusion tests: tiny random models exported by the stages'
own export functions (RUN/vae with its measured scale; RUN/text_encoder, RUN/tokenizer, RUN/clip), and
a small shapes dataset."""

from __future__ import annotations

from pathlib import Path

from tiny import IMAGE_SIZE, TINY_UNET, latent_scale, tiny_autoencoder, tiny_clip, tiny_tokenizer

from ldm.core import layout
from ldm.data.shapes.generator import make_shapes_dataset
from ldm.stages.autoencoder.export import save_vae
from ldm.stages.clip.export import export as export_clip


def build_stage1_run(root: Path, kind: str = "kl", n_images: int = 24) -> Path:
    """root/run with what stages 1 and 1b export (vae/, text_encoder/, tokenizer/, clip/), and
    root/shapes (16 px). Tests take the session-scoped `make_stage1_run` fixture (conftest.py), which
    builds each kind once and copies it."""
    run = root / "run"
    vae = tiny_autoencoder(kind)
    save_vae(vae, run / layout.VAE, *latent_scale(vae))
    tokenizer = tiny_tokenizer()
    export_clip(tiny_clip(tokenizer), tokenizer, run, IMAGE_SIZE)
    make_shapes_dataset(root / "shapes", n=n_images, size=IMAGE_SIZE, seed=0, n_test=8)
    return run


def diffusion_config(root: Path, run: Path, **overrides) -> dict:
    data = {"source": str(root / "shapes"), "resolution": IMAGE_SIZE, "batch_size": 4}
    config = {
        "stage": "diffusion", "run_dir": str(run), "vae": str(run / "vae"), "text_encoder": str(run),
        "data": data, "unet": TINY_UNET,
        "train": {"max_steps": 4, "val_every_n_steps": 2, "checkpoint_every_n_steps": 2,
                  "log_every_n_steps": 1, "limit_val_batches": 1, "lr": 1e-3},
        "samples": {"prompts": ["a red circle"], "seeds": [0, 1], "steps": 2},
    }
    config.update(overrides)
    return config
