"""The CLIP stage's exports (RUN = run_dir), all with save_pretrained in safetensors:

    RUN/text_encoder/   CLIPTextModel: what the diffusion stage and the pipeline condition on
    RUN/tokenizer/      the CLIP tokenizer learned from the captions
    RUN/clip/           the whole model and a CLIPProcessor, for CLIP score and walk metrics
                        (ldm.components.clip.load_clip reads either kind)"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    CLIPProcessor,
    CLIPTextModel,
    CLIPTokenizer,
)

from ldm.components.clip import ClipModel
from ldm.core import layout
from ldm.core.atomic import atomic_folder
from ldm.stages.clip.module import image_processor


def export(clip: ClipModel, tokenizer: CLIPTokenizer, run_dir: str | Path, resolution: int) -> Path:
    """RUN/text_encoder, RUN/tokenizer and RUN/clip, each written whole or not at all."""
    run_dir = Path(run_dir)
    clip = clip.cpu().eval()
    text_encoder = CLIPTextModel(clip.config.text_config)
    text_encoder.load_state_dict(clip.text_model.state_dict())
    with atomic_folder(run_dir / layout.TEXT_ENCODER) as tmp:
        text_encoder.save_pretrained(tmp, safe_serialization=True)
    with atomic_folder(run_dir / layout.TOKENIZER) as tmp:
        tokenizer.save_pretrained(tmp)
    with atomic_folder(run_dir / layout.CLIP) as tmp:
        clip.save_pretrained(tmp, safe_serialization=True)
        CLIPProcessor(image_processor=image_processor(resolution), tokenizer=tokenizer).save_pretrained(tmp)
    return run_dir


