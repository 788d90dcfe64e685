"""Pretrained diffusers weights as a local folder, from a path or a Hugging Face hub id.

A `pretrained:` key (the diffusion stage's, `unet.pretrained`, the autoencoder's `model.pretrained`)
names either a local folder or a hub id:

    runs/shapes/pipeline                              this project's RUN/pipeline
    models/stable-diffusion-v1-5                      a local Stable Diffusion 1.x/2.x pipeline folder
    stable-diffusion-v1-5/stable-diffusion-v1-5       the same from the hub (needs the network)
    models/sd-vae-ft-mse                              one model's folder (config.json + weights)

A hub id is fetched once into huggingface_hub's cache with only what this project reads: configs,
tokenizer files and the safetensors weights, never pickled `.bin` / `.ckpt` files and not the
half-precision variants. Everything after that reads a local folder, so loading is the same code
for both, and `model_folder` finds a part (unet/, vae/) inside either layout.
"""

from __future__ import annotations

import json
from pathlib import Path

from ldm.core.errors import LdmError, first_line
from ldm.core.layout import MODEL_CONFIG as CONFIG_NAME
from ldm.core.layout import MODEL_INDEX, SCHEDULER, TOKENIZER, looks_like_hub_id
from ldm.core.layout import MODEL_WEIGHTS as SAFETENSORS_WEIGHTS_NAME
from ldm.core.layout import MODEL_WEIGHTS_INDEX as SAFE_WEIGHTS_INDEX_NAME
from ldm.core.model_kind import check_supported
from ldm.core.trust import check_no_code

# What a pipeline or single-model repository holds that the project loads. Sharded weights are
# listed in their index file; fp16 variants ("*.fp16.safetensors") are left on the hub.
_WEIGHTS = (SAFETENSORS_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, "diffusion_pytorch_model-*-of-*.safetensors",
            "model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors")
HUB_FILES = [MODEL_INDEX, CONFIG_NAME, "*/" + CONFIG_NAME, f"{SCHEDULER}/*.json", f"{TOKENIZER}/*", f"{TOKENIZER}_2/*",
             *_WEIGHTS, *("*/" + name for name in _WEIGHTS)]


def local_folder(path_or_hub_id: str | Path) -> Path:
    """The folder itself, or a hub id's files fetched into the local cache; LdmError if neither."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return check_supported(check_no_code(path))
    name = str(path_or_hub_id)
    if not looks_like_hub_id(name):
        raise LdmError(f"pretrained model not found: {name} is not a folder (nor a hub id)")
    # Imported here: huggingface_hub's API takes 0.2 s to import, and `ldm generate -h` reads
    # ldm.sampling.lora, which imports this module, before any model library loads.
    from huggingface_hub import snapshot_download

    try:
        fetched = Path(snapshot_download(name, allow_patterns=HUB_FILES))
    except Exception as err:  # the hub raises many types: offline, not found, gated
        raise LdmError(f"'{name}' is not a local folder, and fetching it from the hub failed: "
                       f"{first_line(err)}") from None
    return check_supported(check_no_code(fetched))


def model_folder(root: Path, part: str) -> Path:
    """Where one model of `root` is: root/part in a pipeline folder, else root itself when it is
    that model's own folder (config.json at its top)."""
    for folder in (root / part, root):
        if (folder / CONFIG_NAME).is_file():
            return folder
    raise LdmError(f"{root} holds no {part}: neither {root / part / CONFIG_NAME} nor {root / CONFIG_NAME} "
                   "exists")


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files `from_pretrained` reads for a diffusers model: the single file, or the
    shards its index lists."""
    index = folder / SAFE_WEIGHTS_INDEX_NAME
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / shard for shard in shards]
    single = folder / SAFETENSORS_WEIGHTS_NAME
    if not single.is_file():
        raise LdmError(f"{folder} has no {SAFETENSORS_WEIGHTS_NAME} (weights load from safetensors only)")
    return [single]
