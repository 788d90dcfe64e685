"""Adapters: the folder an adapter run exports, and loading one or several onto a pipeline.

An adapter run of the diffusion stage (`lora:`) exports RUN/lora/. For LoRA and DoRA:

    pytorch_lora_weights.safetensors   the adapters in diffusers' LoRA format, written by
                                       `StableDiffusionPipeline.save_lora_weights` (rank, alpha and
                                       DoRA's use_dora in its metadata), so that plain diffusers loads it:
                                       StableDiffusionPipeline.from_pretrained(BASE).load_lora_weights(RUN/lora)
    base_model.json                    the base it was trained on: its name (a folder or hub id) and
                                       the SHA-256 of the base UNet's weight files

For LoHa and LoKr, which diffusers' LoRA loader cannot read, a peft adapter folder instead
(adapter_config.json, adapter_model.safetensors: `ldm.sampling.peft_adapter`) beside the same note.

Adapters are only meaningful on the weights they were trained against: on another UNet they still
draw something, just not what was trained. So `check_loras` compares each note's fingerprint with
the pipeline's UNet files before any model loads, and refuses a mismatch naming both models. A LoRA
folder without a note (one written by other tools) loads with a warning, as its base is unknown.

`load_loras` puts several onto one pipeline, of any kinds, one named adapter each: diffusers'
`load_lora_weights` (safetensors only) or `load_peft_adapter`, then `set_adapters` (each with its scale).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import safe_open

from ldm.components.pretrained import weight_files
from ldm.core.atomic import atomic_folder
from ldm.core.errors import LdmError
from ldm.core.layout import UNET
from ldm.core.trust import check_no_code
from ldm.sampling.peft_adapter import PEFT_WEIGHTS, is_peft_adapter, load_peft_adapter, write_peft_adapter

if TYPE_CHECKING:  # for annotations only: the CLI reads LoraChoice before any model library loads
    import torch

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # diffusers' default name for a LoRA file
BASE_NOTE = "base_model.json"
ADAPTER_PREFIX = "lora"  # adapters loaded for generation are named lora0, lora1, ...
# How a LoRA file names each adapter's two halves: diffusers' save_lora_weights, and peft's names
ADAPTER_HALVES = {".lora.down.": "down", ".lora.up.": "up", ".lora_A.": "down", ".lora_B.": "up"}


@dataclass(frozen=True)
class LoraChoice:
    """One LoRA to generate with: its folder (RUN/lora) and the scale of its effect (1: as trained)."""

    path: str
    scale: float = 1.0


@dataclass(frozen=True)
class BaseModel:
    """What a LoRA was trained on: the name the config gave and a fingerprint of its UNet weights."""

    name: str
    unet_sha256: str


def lora_choices(paths: list[str], scales: list[float]) -> list[LoraChoice]:
    """Pair `--lora` folders with `--lora-scale` values: none (every scale 1) or one per folder."""
    if scales and len(scales) != len(paths):
        raise LdmError(f"got {len(paths)} --lora folders but {len(scales)} --lora-scale values: give one "
                       "scale per LoRA, in the same order (or none, for scale 1)")
    return [LoraChoice(path, scale) for path, scale in zip(paths, scales or [1.0] * len(paths))]


def unet_fingerprint(unet_folder: str | Path) -> str:
    """SHA-256 of the UNet's weight files (for one file, what `sha256sum` prints for it)."""
    digests = []
    for path in weight_files(Path(unet_folder)):
        with open(path, "rb") as f:
            digests.append(hashlib.file_digest(f, "sha256").hexdigest())
    return digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()


def write_lora(out_dir: str | Path, base: BaseModel, unet_layers: dict[str, torch.Tensor], unet_config: dict,
               text_encoder_layers: dict[str, torch.Tensor] | None = None,
               text_encoder_config: dict | None = None) -> Path:
    """RUN/lora: LoRA or DoRA adapters in diffusers' format (their peft configs as its metadata, so
    that alpha, use_dora and the target modules load as trained) and the note of the base; whole or
    not at all."""
    out_dir = Path(out_dir)
    with atomic_folder(out_dir) as tmp:
        from diffusers import StableDiffusionPipeline  # imported here: slow, and needed only to write

        StableDiffusionPipeline.save_lora_weights(
            tmp, unet_lora_layers=unet_layers, text_encoder_lora_layers=text_encoder_layers,
            weight_name=LORA_WEIGHTS, safe_serialization=True, unet_lora_adapter_metadata=unet_config,
            text_encoder_lora_adapter_metadata=text_encoder_config)
        _write_note(tmp, base)
    return out_dir


def write_adapter_folder(out_dir: str | Path, base: BaseModel, unet_weights: dict[str, torch.Tensor],
                         unet_config: dict) -> Path:
    """RUN/lora of a LoHa or LoKr run: a peft adapter folder and the note of the base; whole or not at all."""
    out_dir = Path(out_dir)
    with atomic_folder(out_dir) as tmp:
        write_peft_adapter(tmp, unet_weights, unet_config)
        _write_note(tmp, base)
    return out_dir


def _write_note(folder: Path, base: BaseModel) -> None:
    (folder / BASE_NOTE).write_text(json.dumps(asdict(base), indent=2) + "\n")


def adapter_file(lora_dir: str | Path) -> Path:
    """The weights file of an adapter folder: diffusers' LoRA file, or a peft adapter's."""
    folder = Path(lora_dir)
    return folder / (PEFT_WEIGHTS if is_peft_adapter(folder) and not (folder / LORA_WEIGHTS).is_file()
                     else LORA_WEIGHTS)


def read_base(lora_dir: str | Path) -> BaseModel | None:
    """The base an adapter folder notes, None when it has no note; LdmError when it is no adapter folder."""
    folder = check_no_code(lora_dir)
    if not adapter_file(folder).is_file():
        raise LdmError(f"--lora {folder}: neither {LORA_WEIGHTS} nor a peft adapter ({PEFT_WEIGHTS}) found "
                       "(an adapter run of the diffusion stage exports RUN/lora)")
    note = folder / BASE_NOTE
    if not note.is_file():
        return None
    return BaseModel(**json.loads(note.read_text()))


def check_loras(loras: list[LoraChoice], pipeline: str | Path) -> None:
    """Every LoRA is a LoRA folder trained on this pipeline's UNet, or an LdmError naming both models."""
    here = None
    for lora in loras:
        base = read_base(lora.path)
        if base is None:
            warnings.warn(f"{lora.path} has no {BASE_NOTE}: its base model is unknown, so it cannot be "
                          f"checked against {pipeline}", stacklevel=2)
            continue
        here = here or unet_fingerprint(Path(pipeline) / UNET)
        if base.unet_sha256 != here:
            raise LdmError(f"the LoRA {lora.path} was trained on {base.name}, not on {pipeline}: their UNet "
                           f"weights differ (sha256 {base.unet_sha256[:12]}... vs {here[:12]}...)")


def load_loras(pipe, loras: list[LoraChoice]) -> None:
    """Load each adapter folder as its own adapter (lora0, lora1, ...) and set their scales."""
    if not loras:
        return
    names = [f"{ADAPTER_PREFIX}{i}" for i in range(len(loras))]
    for name, lora in zip(names, loras):
        weights = adapter_file(lora.path)
        if weights.name == PEFT_WEIGHTS:  # LoHa, LoKr
            load_peft_adapter(pipe.unet, lora.path, name)
            continue
        check_fits(weights, pipe.unet)
        pipe.load_lora_weights(lora.path, weight_name=LORA_WEIGHTS, adapter_name=name, use_safetensors=True)
    pipe.set_adapters(names, adapter_weights=[lora.scale for lora in loras])


def check_fits(weights: Path, unet) -> None:
    """Every UNet adapter in `weights` sits on a layer of `unet` with its sizes, or an LdmError.

    A LoRA without its base note may come from another model: diffusers would stop at the first
    layer whose sizes differ with torch's multi-line size-mismatch error, or skip layers whose
    names it does not find. Only the file's header is read (safetensors' `safe_open`)."""
    with safe_open(str(weights), framework="pt") as opened:
        for key in opened.keys():
            marker = next((m for m in ADAPTER_HALVES if m in key), None)
            if not key.startswith("unet.") or marker is None:
                continue  # text-encoder adapters, and formats other than diffusers' own
            layer_name = key.removeprefix("unet.").partition(marker)[0]
            shape = opened.get_slice(key).get_shape()
            try:
                layer = unet.get_submodule(layer_name)
            except AttributeError:
                raise LdmError(f"the LoRA {weights.parent} does not fit this pipeline's UNet: it has no layer "
                               f"{layer_name} (was the LoRA trained on another model?)") from None
            base = getattr(layer, "base_layer", layer).weight.shape  # peft wraps layers it adapted
            # the down half reads the layer's input (rank x in), the up half writes its output (out x rank)
            fits = shape[1] == base[1] if ADAPTER_HALVES[marker] == "down" else shape[0] == base[0]
            if not fits:
                raise LdmError(f"the LoRA {weights.parent} does not fit this pipeline's UNet: its adapter of "
                               f"{layer_name} is {tuple(shape)}, the layer is {tuple(base)} (was the LoRA "
                               "trained on another model?)")
