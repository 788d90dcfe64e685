"""LoHa and LoKr adapters as a peft adapter folder: writing one, and loading it onto a pipeline's UNet.

diffusers' `load_lora_weights` reads LoRA (and DoRA) files only, so a LoHa or LoKr run of the
diffusion stage (`lora.kind: loha | lokr`) exports the format peft itself saves adapters in:

    adapter_config.json          the peft config (LoHaConfig / LoKrConfig: rank, alpha, targets, ...)
    adapter_model.safetensors    the adapter's weights under peft's names (`base_model.model.` first,
                                 as `PeftModel.save_pretrained` writes them)
    base_model.json              the base it was trained on (`ldm.sampling.lora`)

`ldm generate --lora` and `ldm animate --lora` load it (`load_peft_adapter`): the config is read as
JSON (no code runs), the adapter injected into the UNet with diffusers' `add_adapter`, its weights
set with peft's `set_peft_model_state_dict`, and diffusers' `set_adapters` scales it like a LoRA.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ldm.core.errors import LdmError, first_line

if TYPE_CHECKING:
    import torch

PEFT_CONFIG = "adapter_config.json"  # peft's names for an adapter folder's two files
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # how PeftModel names the model it wraps, in its saved keys
PEFT_TYPES = ("LOHA", "LOKR")  # the kinds this folder holds; LoRA and DoRA go to diffusers' format


def is_peft_adapter(folder: str | Path) -> bool:
    return (Path(folder) / PEFT_CONFIG).is_file() and (Path(folder) / PEFT_WEIGHTS).is_file()


def write_peft_adapter(tmp: Path, weights: dict[str, torch.Tensor], config: dict) -> None:
    """The adapter's config and weights into `tmp` (a folder being written whole by the caller)."""
    from safetensors.torch import save_file

    (tmp / PEFT_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True, default=list) + "\n")
    save_file({PEFT_PREFIX + name: tensor for name, tensor in weights.items()}, str(tmp / PEFT_WEIGHTS),
              metadata={"format": "pt"})


def read_peft_config(folder: Path):
    """The folder's LoHaConfig or LoKrConfig, or an LdmError naming what it holds instead."""
    import peft

    try:
        saved = json.loads((folder / PEFT_CONFIG).read_text())
    except (OSError, ValueError) as err:
        raise LdmError(f"--lora {folder}: cannot read {PEFT_CONFIG}: {first_line(err)}") from None
    kind = saved.get("peft_type")
    if kind not in PEFT_TYPES:
        raise LdmError(f"--lora {folder}: a peft adapter of type {kind!r}; this folder format holds LoHa or "
                       "LoKr adapters (LoRA and DoRA load from pytorch_lora_weights.safetensors)")
    config_class = peft.LoHaConfig if kind == "LOHA" else peft.LoKrConfig
    known = set(config_class.__dataclass_fields__)
    return config_class(**{key: value for key, value in saved.items() if key in known})


def load_peft_adapter(unet, folder: str | Path, adapter_name: str) -> None:
    """Put the folder's adapter onto `unet` under `adapter_name`, or an LdmError if it does not fit."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_peft_config(folder)
    weights = {name.removeprefix(PEFT_PREFIX): tensor for name, tensor in load_file(folder / PEFT_WEIGHTS).items()}
    try:
        unet.add_adapter(config, adapter_name=adapter_name)
        result = set_peft_model_state_dict(unet, weights, adapter_name=adapter_name)
    except (ValueError, RuntimeError) as err:  # targets not found; tensors of other sizes
        raise LdmError(f"the adapter {folder} does not fit this pipeline's UNet: {first_line(err)} (was it "
                       "trained on another model?)") from None
    if result.unexpected_keys:
        raise LdmError(f"the adapter {folder} does not fit this pipeline's UNet: it has no layer for "
                       f"{result.unexpected_keys[0]} (was it trained on another model?)")
    unet.to(unet.dtype)  # the new adapter's weights in the UNet's precision (float16 / bfloat16 pipelines)
