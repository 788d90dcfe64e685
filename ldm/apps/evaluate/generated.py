"""Images generated for evaluation: n per prompt through `ldm generate`, read back from their PNGs,
and on the shapes data their prompt fidelity (the attribute checker reads each image's colour,
shape and position and compares them with what its prompt asked for).

    prompts, attributes = held_out_requests()    # the shapes data's held-out combinations
    paths = generate_samples("RUN/pipeline", prompts, "OUT/samples", n=8, seed=0, steps=20, guidance=4)

The quickstart's samples step and the fine-tuning benchmark use these as the diffusion evaluation does.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from ldm.apps.generate import generate, plan
from ldm.apps.generate_settings import GenerateOptions
from ldm.core.errors import LdmError
from ldm.data.shapes.checker import prompt_fidelity
from ldm.data.shapes.generator import HELD_OUT, held_out_prompts


def held_out_requests() -> tuple[list[str], list[dict[str, str]]]:
    """The shapes data's held-out prompts and the attributes each one asks for."""
    attributes = [{"colour": c, "shape": s, "position": p} for c, s, p in HELD_OUT]
    return held_out_prompts(), attributes


def sample_paths(pipeline: str, prompts: list[str], out: str | Path, n: int, seed: int) -> list[Path]:
    """Where `generate_samples` writes the n images of each prompt, in prompt order."""
    jobs = plan(GenerateOptions(pipeline=str(pipeline), prompts=prompts, n=n, seed=seed))
    return [Path(out) / job.file_name for job in jobs]


def generate_samples(pipeline: str, prompts: list[str], out: str | Path, n: int, seed: int,
                     steps: int, guidance: float, loras: list = (), embeddings: list = (),
                     sampler: str | None = None) -> list[Path]:
    """n images per prompt in `out` (PNGs with their settings, and grid.png), through `ldm generate`
    (with `loras`, `ldm.sampling.lora.LoraChoice`s, and textual-inversion `embeddings` files
    loaded onto the pipeline; `sampler` None: the pipeline's own)."""
    generate(GenerateOptions(pipeline=str(pipeline), prompts=prompts, out=str(out), n=n, seed=seed,
                             steps=steps, guidance=guidance, loras=list(loras), sampler=sampler,
                             embeddings=[str(path) for path in embeddings]))
    return sample_paths(pipeline, prompts, out, n, seed)


def read_samples(paths: list[Path]) -> list[Image.Image]:
    images = []
    for path in paths:
        if not path.is_file():
            raise LdmError(f"generated image missing: {path}")
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


def shapes_fidelity(pipeline: str, prompts: list[str], attributes: list[dict], out: str | Path,
                    n: int = 8, seed: int = 0, steps: int = 20, guidance: float = 4.0,
                    loras: list = (), embeddings: list = ()) -> dict[str, float]:
    """Prompt fidelity for any shapes prompts: n images per prompt generated into `out`, read back
    by the attribute checker (the shares right for colour, shape, both and position)."""
    images = read_samples(generate_samples(pipeline, prompts, out, n, seed, steps, guidance, loras, embeddings))
    return prompt_fidelity(images, [wanted for wanted in attributes for _ in range(n)])
