"""Model folders are data, never code: what makes a folder run code when loaded is refused up front.

diffusers and transformers can be told to import code that ships with a model: a `model_index.json`
whose `_class_name` is a [module, class] pair (a custom pipeline class), a `config.json` with an
`auto_map` (a custom model class), Python files beside the weights that those point to. ldm loads
only the classes it knows (from diffusers and transformers themselves), passes
`trust_remote_code=False` where a loader takes it, and reads weights from safetensors only (a pickle
runs code when it is unpickled). `check_no_code` is called on every local folder before a loader
touches it, so such a folder is refused with the reason, whatever the library versions would do.
"""

from __future__ import annotations

import json
from pathlib import Path

from ldm.core.errors import LdmError
from ldm.core.layout import MODEL_INDEX

# Libraries whose classes a model_index.json may name; anything else would be imported from a file.
KNOWN_LIBRARIES = {"diffusers", "transformers", None}


def check_no_code(folder: str | Path) -> Path:
    """`folder`, or an LdmError naming what in it would make a loader run code that came with it."""
    folder = Path(folder)
    if not folder.is_dir():
        return folder  # the loader says what is missing
    code = sorted(p.relative_to(folder) for p in folder.rglob("*.py"))
    if code:
        raise LdmError(f"{folder} holds Python files ({', '.join(map(str, code[:3]))}): a model folder must "
                       "hold only configs and weights, since ldm never runs code that comes with a model; "
                       "remove them if the folder is yours")
    for config in sorted(folder.rglob("*.json")):
        try:
            data = json.loads(config.read_text())
        except (OSError, ValueError):
            continue  # not a config the loaders read as code; they report broken files themselves
        if not isinstance(data, dict):
            continue
        if "auto_map" in data:
            raise LdmError(f"{config} has an auto_map: it asks for model classes from code in the folder "
                           "or on the hub, which ldm never runs")
        if config.name == MODEL_INDEX:
            _check_model_index(config, data)
    return folder


def _check_model_index(path: Path, index: dict) -> None:
    if isinstance(index.get("_class_name"), list):
        raise LdmError(f"{path}: _class_name {index['_class_name']} names a pipeline class in a code file; "
                       "ldm loads only its own and diffusers' pipeline classes")
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2:
            continue
        library = entry[0]
        if library not in KNOWN_LIBRARIES:
            raise LdmError(f"{path}: component {name!r} comes from {library!r}, not diffusers or transformers: "
                           "loading it would import code from the folder")
