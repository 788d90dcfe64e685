"""OUT/settings.json: what a walk's frames depend on, saved beside them, and read back.

`render_settings` is everything the frames depend on (the pipeline's weights and the audio file
included, by size and modification time or by hash). A rerun into the same folder must match it,
so a resumed render never mixes frames of two walks; `DELIVERY_SETTINGS` may change freely.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, fields
from pathlib import Path

from ldm.apps.animate.layout import SETTINGS_FILE
from ldm.apps.animate.settings import WalkSettings
from ldm.core.errors import LdmError
from ldm.sampling.lora import LoraChoice, adapter_file

# Settings that change how the result is delivered, not its frames: free to change on resume.
# (`fps` only while the walk has no clock: with times or audio it sets the frame count.)
DELIVERY_SETTINGS = ("out", "fps", "batch_size", "video_scale")
# Settings that only mean something with audio: dropped from settings.json without it.
AUDIO_SETTINGS = ("audio_start", "audio_end", "on_beats", "audio_smooth", "audio_feature")


def render_settings(s: WalkSettings) -> dict:
    """Everything the frames depend on, as saved in OUT/settings.json."""
    delivery = [k for k in DELIVERY_SETTINGS if not (k == "fps" and s.timed)]
    saved = {k: v for k, v in asdict(s).items() if k not in delivery}
    if s.timed:  # the clock, not frames per segment, sets the frame count
        saved.pop("frames")
    if not s.respaced:  # then none of them changes a frame
        saved.pop("even_passes")
        saved.pop("distance_model")
    if not (s.respaced and s.uses_diffusion and s.interpolation == "dissolve"):  # no jump search
        saved.pop("dissolve_jumps")
    if s.respaced and s.uses_diffusion and s.distance_model is not None:
        saved["distance_model"] = str(Path(s.distance_model).resolve())
    if s.interpolation == "dissolve" or not s.uses_diffusion:
        # Walks rendered before `interpolation` existed were all "dissolve": they still resume.
        saved.pop("interpolation")
    if not s.uses_diffusion:
        for key in ("steps", "guidance", "guidances", "sampler", "negative_prompt", "prompts", "seeds",
                    "captions"):
            saved.pop(key)
    if s.audio is None:
        for key in AUDIO_SETTINGS:
            saved.pop(key)
    else:
        saved["audio"] = {"path": str(Path(s.audio).resolve()), "sha256": _sha256(s.audio)}
    pipeline = Path(s.pipeline).resolve()
    saved["pipeline"] = str(pipeline)
    # A re-exported pipeline has new weights: their sizes and modification times tell.
    saved["weights"] = {str(p.relative_to(pipeline)): _file_stamp(p)
                        for p in sorted(pipeline.rglob("*.safetensors"))}
    saved["images"] = [{"path": str(Path(p).resolve()), "sha256": _sha256(p)} for p in s.images]
    for key in ("init_image", "mask", "feather"):
        saved.pop(key)
    if s.mask is not None:  # like the images: the files' bytes make the frames
        saved["fixed_region"] = {name: {"path": str(Path(path).resolve()), "sha256": _sha256(path)}
                                 for name, path in (("init_image", s.init_image), ("mask", s.mask))}
        saved["fixed_region"]["feather"] = s.feather
    saved.pop("vae")
    if s.vae is not None:  # like the pipeline's weights: another decoder makes other frames
        vae = Path(s.vae).resolve()
        stamps = {p.name: _file_stamp(p) for p in sorted(vae.glob("*.safetensors"))}
        saved["vae"] = {"path": str(vae), "weights": stamps}
    for key in ("prompt_chunks", "embeddings"):  # only when used: walks rendered before them still resume
        if not saved[key]:
            saved.pop(key)
    if s.embeddings:  # like a LoRA's weights: a retrained embedding must not mix with older frames
        saved["embeddings"] = [{"path": str(Path(path).resolve()), "weights": _file_stamp(Path(path))}
                               for path in s.embeddings]
    saved.pop("loras")
    if s.loras:  # like the pipeline's weights: a retrained LoRA must not mix with older frames
        saved["loras"] = [{"path": str(Path(lora.path).resolve()), "scale": lora.scale,
                           "weights": _file_stamp(adapter_file(lora.path))} for lora in s.loras]
    return json.loads(json.dumps(saved))  # as it reads back from JSON (lists, floats)


def _file_stamp(path: Path) -> list[int]:
    return [path.stat().st_size, path.stat().st_mtime_ns]


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def saved_walk_settings(folder: str | Path) -> WalkSettings:
    """The settings a walk folder was rendered with, read back from its settings.json (what the
    frames do not depend on, like the batch size, comes back at its default)."""
    folder = Path(folder)
    path = folder / SETTINGS_FILE
    if not path.is_file():
        raise LdmError(f"{folder} is not a walk folder: {SETTINGS_FILE} is missing (render one with "
                       "ldm animate)")
    saved = json.loads(path.read_text())
    plain = {f.name for f in fields(WalkSettings)} - {"out", "images", "audio", "vae", "loras", "embeddings",
                                                      "init_image", "mask", "feather"}
    fixed = saved.get("fixed_region") or {}
    if "even_motion" in saved:  # a walk rendered before `motion` existed
        saved["motion"] = "even" if saved["even_motion"] else "linear"
    saved.setdefault("interpolation", "dissolve")  # not saved for "dissolve" (render_settings)
    return WalkSettings(out=str(folder), **{k: v for k, v in saved.items() if k in plain},
                        images=[image["path"] for image in saved.get("images", [])],
                        audio=saved["audio"]["path"] if saved.get("audio") else None,
                        vae=saved["vae"]["path"] if saved.get("vae") else None,
                        loras=[LoraChoice(lora["path"], lora["scale"]) for lora in saved.get("loras", [])],
                        embeddings=[embedding["path"] for embedding in saved.get("embeddings", [])],
                        **({"init_image": fixed["init_image"]["path"], "mask": fixed["mask"]["path"],
                            "feather": fixed["feather"]} if fixed else {}))


def check_saved_settings(out: Path, current: dict) -> bool:
    """True if OUT holds a render of these settings, False if OUT is new; LdmError if it holds
    anything else (so a resumed render can never mix frames of two walks)."""
    if out.exists() and not out.is_dir():
        raise LdmError(f"--out {out} is a file, not a folder: choose a new --out")
    path = out / SETTINGS_FILE
    if not path.is_file():
        if out.exists() and any(out.iterdir()):
            raise LdmError(f"{out} is not empty and has no {SETTINGS_FILE}: it is not a walk folder; "
                           "choose a new --out")
        return False
    saved = json.loads(path.read_text())
    differ = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
    if differ:
        raise LdmError(f"{out} holds a walk rendered with other settings ({', '.join(differ)} differ); "
                       "rerun with the same settings to resume, or choose a new --out")
    return True
