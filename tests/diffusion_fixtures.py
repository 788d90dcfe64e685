"""Stage-1 and stage-1b stand-ins for the diffusion tests: tiny random models saved as the earlier
stages export them (RUN/vae, RUN/text_encoder, RUN/tokenizer), and a small shapes dataset."""

from __future__ import annotations

from pathlib import Path

from tiny import IMAGE_SIZE, tiny_components

from ldm.data.shapes.generator import make_shapes_dataset

TINY_UNET = {"block_out_channels": [16, 32], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "layers_per_block": 1,
             "norm_num_groups": 8}


def build_stage1_run(root: Path, kind: str = "kl", n_images: int = 24) -> Path:
    """root/run with vae/, text_encoder/, tokenizer/, and root/shapes (16 px). Tests take the
    session-scoped `make_stage1_run` fixture (conftest.py), which builds each kind once and copies it."""
    parts = tiny_components(kind)
    run = root / "run"
    parts["vae"].save_pretrained(run / "vae")
    parts["text_encoder"].save_pretrained(run / "text_encoder")
    parts["tokenizer"].save_pretrained(run / "tokenizer")
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
