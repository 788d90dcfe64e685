"""`ldm animate`: render a latent walk to numbered PNGs, a GIF and an MP4, resumably.

    result = animate(WalkSettings(pipeline="runs/shapes/pipeline", out="walks/demo",
                                  prompts=["a red circle", "a blue square"], seeds=[1, 2]))

The output folder holds everything a render needs to resume:

    OUT/settings.json          what the frames depend on; a rerun with other settings is an error
    OUT/frames/frame_00000.png the walk's frames (plus times.json: each frame's timeline position)
    OUT/even-motion/pass-N/    with --even-motion: the probe renders that placed the frames
    OUT/walk.gif, walk.mp4     assembled from frames/ at the end of every run
    OUT/smoothness.json        adjacent-frame distance: mean, max, coefficient of variation

A rerun renders only the frames missing on disk (each PNG is written whole or not at all). Under
`accelerate launch`, every process renders its share of the missing frames and the main process
assembles the videos once all are done.

Even motion: the walk is first rendered at evenly spaced positions (pass 0, which is also the
"linear" baseline in the report); the distances between its frames give the path's arc length,
and the next pass places frames at equal arc length (`ldm.walks.even_times`). Each later pass
refines the estimate with every frame rendered so far; the last pass is the walk itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from ldm import smoothness, video, walks
from ldm.errors import LdmError
from ldm.export import atomic_write_bytes

WALK_KINDS = ("prompt", "seed", "image", "autoencoder")
DEFAULT_GUIDANCE = 4.0
# Inverted noise reproduces its image only without guidance (see ldm.inversion).
IMAGE_WALK_GUIDANCE = 1.0
IMAGE_WALK_SAMPLER = "ddim"  # the sampler that DDIM inversion inverts
SETTINGS_FILE = "settings.json"
TIMES_FILE = "times.json"
REPORT_FILE = "smoothness.json"
FRAMES_DIR = "frames"
PASSES_DIR = "even-motion"
# Settings that change how the result is delivered, not its frames: free to change on resume.
DELIVERY_SETTINGS = ("out", "fps", "batch_size", "video_scale")


@dataclass
class WalkSettings:
    pipeline: str  # RUN/pipeline (an autoencoder walk also takes RUN/vae)
    out: str
    kind: str = "prompt"  # one of WALK_KINDS
    prompts: list[str] = field(default_factory=list)  # one per keyframe (a seed walk: exactly one)
    seeds: list[int] = field(default_factory=list)  # one per keyframe; prompt walk default 0..K-1
    images: list[str] = field(default_factory=list)  # image and autoencoder walks
    captions: list[str] = field(default_factory=list)  # image walk: one per image
    negative_prompt: str = ""
    frames: int = 16  # per segment, both keyframes included
    loop: bool = False
    even_motion: bool = False
    even_passes: int = 1
    distance_model: str | None = None  # a CLIP folder: measure motion in its image features
    steps: int = 20
    guidance: float | None = None  # None: DEFAULT_GUIDANCE, or IMAGE_WALK_GUIDANCE for image walks
    sampler: str | None = None  # None: the default sampler, or DDIM for image walks
    fps: float = 12.0
    batch_size: int = 4
    video_scale: int = 1  # nearest-neighbour enlargement of the GIF and MP4

    @property
    def num_keyframes(self) -> int:
        return {"prompt": len(self.prompts), "seed": len(self.seeds)}.get(self.kind, len(self.images))

    @property
    def uses_diffusion(self) -> bool:
        return self.kind != "autoencoder"


@dataclass
class AnimationResult:
    out: Path
    frames: int  # frames in the walk
    rendered: int  # frames rendered by this run (the rest were on disk, or copied from a probe pass)
    gif: Path | None
    mp4: Path | None
    report: dict


# ---- checking the request ------------------------------------------------------------------------

def resolve(settings: WalkSettings) -> WalkSettings:
    """Fill the defaults that depend on the walk kind, then check everything that can be checked
    without loading a model. Raises LdmError."""
    from ldm.samplers import DEFAULT_SAMPLER

    if settings.kind not in WALK_KINDS:
        raise LdmError(f"unknown walk kind {settings.kind!r}; choose one of {', '.join(WALK_KINDS)}")
    image_walk = settings.kind == "image"
    settings = replace(
        settings,
        seeds=settings.seeds or (list(range(len(settings.prompts))) if settings.kind == "prompt" else []),
        guidance=settings.guidance if settings.guidance is not None
        else (IMAGE_WALK_GUIDANCE if image_walk else DEFAULT_GUIDANCE),
        sampler=settings.sampler or (IMAGE_WALK_SAMPLER if image_walk else DEFAULT_SAMPLER),
    )
    _check_numbers(settings)
    _check_keyframes(settings)
    if settings.uses_diffusion:
        _check_sampler(settings)
    return settings


def _check_numbers(s: WalkSettings) -> None:
    if s.frames < 2:
        raise LdmError(f"--frames must be at least 2 (a segment's two keyframes), got {s.frames}")
    if not s.fps > 0:
        raise LdmError(f"--fps must be positive, got {s.fps:g}")
    for name, value in (("batch-size", s.batch_size), ("steps", s.steps), ("even-passes", s.even_passes),
                        ("video-scale", s.video_scale)):
        if value < 1:
            raise LdmError(f"--{name} must be at least 1, got {value}")


def _check_keyframes(s: WalkSettings) -> None:
    what = {"prompt": "prompts", "seed": "seeds"}.get(s.kind, "images")
    if s.num_keyframes < 2:
        raise LdmError(f"a {s.kind} walk needs at least two keyframes ({what}), got {s.num_keyframes}")
    if s.kind == "prompt" and len(s.seeds) != len(s.prompts):
        raise LdmError(f"got {len(s.prompts)} prompts but {len(s.seeds)} seeds: give one seed per prompt "
                       "(or none, for seeds 0, 1, 2, ...)")
    if s.kind == "seed" and len(s.prompts) != 1:
        raise LdmError(f"a seed walk takes exactly one prompt, got {len(s.prompts)}")
    if s.kind == "image" and len(s.captions) != len(s.images):
        raise LdmError(f"got {len(s.images)} images but {len(s.captions)} captions: an image walk needs "
                       "one caption per image (the prompt its inversion is conditioned on)")
    for path in s.images:
        _check_image(path)
    if s.distance_model is not None and not (Path(s.distance_model) / "config.json").is_file():
        raise LdmError(f"--distance-model {s.distance_model}: no CLIP model there (config.json is missing)")


def _check_image(path: str) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
    except FileNotFoundError:
        raise LdmError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise LdmError(f"cannot read image {path}: {err}") from None


def _check_sampler(s: WalkSettings) -> None:
    from ldm.samplers import STOCHASTIC, check_sampler

    check_sampler(s.sampler)
    if s.sampler in STOCHASTIC:
        raise LdmError(f"sampler {s.sampler!r} draws fresh noise at every step: a walk needs a "
                       "deterministic sampler (e.g. ddim or dpmsolver++) so that frames match and resume")
    if s.kind == "image" and s.sampler != IMAGE_WALK_SAMPLER:
        raise LdmError(f"an image walk samples with {IMAGE_WALK_SAMPLER} (its keyframes are DDIM "
                       f"inversions), got --sampler {s.sampler}")


# ---- settings on disk ----------------------------------------------------------------------------

def render_settings(s: WalkSettings) -> dict:
    """Everything the frames depend on, as saved in OUT/settings.json."""
    saved = {k: v for k, v in asdict(s).items() if k not in DELIVERY_SETTINGS}
    if not s.even_motion:  # then neither changes a frame
        saved.pop("even_passes")
        saved.pop("distance_model")
    elif s.distance_model is not None:
        saved["distance_model"] = str(Path(s.distance_model).resolve())
    if not s.uses_diffusion:
        for key in ("steps", "guidance", "sampler", "negative_prompt", "prompts", "seeds", "captions"):
            saved.pop(key)
    pipeline = Path(s.pipeline).resolve()
    saved["pipeline"] = str(pipeline)
    # A re-exported pipeline has new weights: their sizes and modification times tell.
    saved["weights"] = {str(p.relative_to(pipeline)): [p.stat().st_size, p.stat().st_mtime_ns]
                        for p in sorted(pipeline.rglob("*.safetensors"))}
    saved["images"] = [{"path": str(Path(p).resolve()), "sha256": _sha256(p)} for p in s.images]
    return json.loads(json.dumps(saved))  # as it reads back from JSON (lists, floats)


def _sha256(path: str) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_saved_settings(out: Path, current: dict) -> bool:
    """True if OUT holds a render of these settings, False if OUT is new; LdmError if it holds
    anything else (so a resumed render can never mix frames of two walks)."""
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


def _write_json(path: Path, data) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


# ---- rendering -----------------------------------------------------------------------------------

def build_renderer(s: WalkSettings, device):
    """The walk's renderer, with its keyframes made (this is where models load)."""
    from ldm import renderers

    if not s.uses_diffusion:
        vae, size = _load_autoencoder(s.pipeline, device)
        return renderers.autoencoder_walk(vae, s.images, size, s.loop)
    from ldm.pipeline_io import load_pipeline
    from ldm.samplers import make_sampler

    pipe = load_pipeline(s.pipeline, device=device)
    pipe.scheduler = make_sampler(s.sampler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)  # the bar that counts is the one over frames
    if s.kind == "image":
        return renderers.image_walk(pipe, s.images, s.captions, s.negative_prompt, s.loop, s.steps, s.guidance)
    prompts = s.prompts if s.kind == "prompt" else s.prompts * len(s.seeds)
    return renderers.prompt_walk(pipe, prompts, s.seeds, s.negative_prompt, s.loop, s.steps, s.guidance)


def _autoencoder_folder(path: str) -> Path:
    """The autoencoder of RUN/pipeline (its vae/) or RUN/vae itself, or an LdmError."""
    path = Path(path)
    for folder in (path / "vae", path):
        if (folder / "config.json").is_file():
            return folder
    raise LdmError(f"no autoencoder at {path}: expected RUN/pipeline (with vae/) or RUN/vae")


def _load_autoencoder(path: str, device):
    """(vae, image size): at the diffusion model's resolution when `path` is a pipeline."""
    from ldm.vae import downsampling_factor, load_vae

    vae = load_vae(_autoencoder_folder(path)).to(device)
    unet_config = Path(path) / "unet" / "config.json"
    if unet_config.is_file():
        return vae, json.loads(unet_config.read_text())["sample_size"] * downsampling_factor(vae)
    return vae, vae.config.sample_size


def frame_metadata(s: WalkSettings, position: float) -> dict[str, str]:
    """PNG text: where the frame is on the walk and what made it."""
    i, j, u = walks.locate(position, s.num_keyframes, s.loop)
    meta = {"ldm_walk": s.kind, "position": f"{position:.6f}", "keyframes": f"{i} -> {j}", "u": f"{u:.6f}"}
    if s.uses_diffusion:
        prompts = s.prompts * s.num_keyframes if s.kind == "seed" else (s.prompts or s.captions)
        meta["prompt"] = prompts[i] if u == 0 else f"{prompts[i]} -> {prompts[j]}"
        if s.seeds:
            meta["seed"] = str(s.seeds[i]) if u == 0 else f"{s.seeds[i]} -> {s.seeds[j]}"
        meta.update(negative_prompt=s.negative_prompt, steps=str(s.steps), guidance=f"{s.guidance:g}",
                    sampler=s.sampler)
    if s.images:
        meta["image"] = s.images[i] if u == 0 else f"{s.images[i]} -> {s.images[j]}"
    return meta


def render_pass(s: WalkSettings, renderer, times: list[float], folder: Path, state,
                reuse: dict[float, Path], desc: str) -> int:
    """Render the frames at `times` that `folder` lacks; returns how many were rendered.

    Frames go in fixed batches of consecutive indices, so a resumed render batches them as the
    first run did. A frame whose position was rendered in an earlier pass is copied, not rendered.
    """
    from tqdm.auto import tqdm

    _check_times(folder, times, state)
    done = video.existing_frames(folder)
    missing = [i for i in range(len(times)) if i not in done]
    if state.is_main_process:
        video.remove_temporaries(folder)  # no process is writing yet: any there are from a killed run
        for i in [i for i in missing if times[i] in reuse]:
            atomic_write_bytes(video.frame_path(folder, i), reuse[times[i]].read_bytes())
    state.wait_for_everyone()
    missing = [i for i in missing if times[i] not in reuse]
    wanted = set(missing)
    batches = [[i for i in range(start, min(start + s.batch_size, len(times))) if i in wanted]
               for start in range(0, len(times), s.batch_size)]
    batches = [b for b in batches if b]
    bar = tqdm(total=len(times), initial=len(times) - len(missing), desc=desc, unit="frame",
               disable=not state.is_main_process)
    with state.split_between_processes(batches) as mine:
        for batch in mine:
            frames = renderer.render([times[i] for i in batch])
            for i, frame in zip(batch, frames):
                video.save_frame(folder, i, frame, frame_metadata(s, times[i]))
            bar.update(len(batch) * state.num_processes)
    bar.close()
    state.wait_for_everyone()
    return len(missing)


def _check_times(folder: Path, times: list[float], state) -> None:
    """Frames already in `folder` must have been rendered at the same positions."""
    path = folder / TIMES_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        if len(saved) != len(times) or any(abs(a - b) > 1e-9 for a, b in zip(saved, times)):
            raise LdmError(f"{folder} holds frames rendered at other positions on the walk; delete it "
                           "to render it again")
    elif state.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        _write_json(path, times)
    state.wait_for_everyone()


def frame_distance(s: WalkSettings) -> smoothness.FrameDistance:
    if s.distance_model is None:
        return smoothness.PIXEL_DISTANCE
    return smoothness.clip_distance(str(Path(s.distance_model).resolve()))


def next_times(s: WalkSettings, rendered: dict[float, Path]) -> list[float]:
    """Even-motion positions from every frame rendered so far (position -> PNG)."""
    positions = sorted(rendered)
    frames = [video.read_frame(rendered[p]) for p in positions]
    if s.loop:  # the closing segment ends where the walk began
        positions.append(float(walks.segment_count(s.num_keyframes, s.loop)))
        frames.append(frames[0])
    gaps = frame_distance(s).consecutive(frames)
    return walks.even_times(positions, gaps, s.num_keyframes, s.frames, s.loop)


# ---- the whole render ----------------------------------------------------------------------------

def animate(settings: WalkSettings) -> AnimationResult:
    from accelerate import PartialState

    s = resolve(settings)
    out = Path(s.out)
    if s.uses_diffusion:
        from ldm.pipeline_io import check_pipeline_folder

        check_pipeline_folder(s.pipeline)
    else:
        _autoencoder_folder(s.pipeline)
    current = render_settings(s)
    # PartialState counts a torchrun-style launch as several CPU processes only when told `cpu`.
    state = PartialState(cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()))
    check_saved_settings(out, current)
    state.wait_for_everyone()  # every process has checked before the main one writes
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / SETTINGS_FILE, current)
    state.wait_for_everyone()

    renderer = build_renderer(s, state.device)
    times = walks.linear_times(s.num_keyframes, s.frames, s.loop)
    passes = s.even_passes if s.even_motion else 0
    rendered_total, rendered_frames = 0, {}
    for p in range(passes + 1):
        last = p == passes
        folder = out / FRAMES_DIR if last else out / PASSES_DIR / f"pass-{p}"
        desc = "frames" if passes == 0 else f"{'frames' if last else 'probe'} (pass {p + 1}/{passes + 1})"
        rendered_total += render_pass(s, renderer, times, folder, state, rendered_frames, desc)
        rendered_frames.update({t: video.frame_path(folder, i) for i, t in enumerate(times)})
        if not last:
            times = next_times(s, rendered_frames)

    result = AnimationResult(out, len(times), rendered_total, None, None, {})
    if state.is_main_process:
        result = _finish(s, out, len(times), rendered_total)
    state.wait_for_everyone()
    return result


def _finish(s: WalkSettings, out: Path, count: int, rendered: int) -> AnimationResult:
    """Videos and the smoothness report, from the frames on disk."""
    frames = video.read_frames(out / FRAMES_DIR, count)
    shown = video.enlarge(frames, s.video_scale)
    gif = video.write_gif(shown, out / video.GIF_NAME, s.fps)
    mp4 = video.write_mp4(shown, out / video.MP4_NAME, s.fps)
    report = smoothness_report(s, out, frames)
    _write_json(out / REPORT_FILE, report)
    return AnimationResult(out, count, rendered, gif, mp4, report)


def smoothness_report(s: WalkSettings, out: Path, frames) -> dict:
    distance = frame_distance(s)
    distances = smoothness.adjacent_distances(frames, s.loop, distance)
    report = {"distance": distance.name, "frames": len(frames), "loop": s.loop,
              "even_motion": s.even_motion, "walk": smoothness.summarize(distances)}
    if s.loop:
        report["walk"]["closing"] = distances[-1]  # last frame -> first, as the video repeats
    if s.even_motion:
        linear = out / PASSES_DIR / "pass-0"
        count = len(walks.linear_times(s.num_keyframes, s.frames, s.loop))
        linear_frames = video.read_frames(linear, count)
        report["linear"] = smoothness.summarize(smoothness.adjacent_distances(linear_frames, s.loop, distance))
        report["cv_ratio"] = report["walk"]["cv"] / max(report["linear"]["cv"], 1e-12)
    return report


def format_report(report: dict) -> str:
    walk = report["walk"]
    lines = [f"adjacent-frame distance ({report['frames']} frames): mean {walk['mean']:.4f}, "
             f"max {walk['max']:.4f}, CV {walk['cv']:.3f}"]
    if "closing" in walk:
        lines.append(f"  loop closing step (last -> first): {walk['closing']:.4f}")
    if "linear" in report:
        linear = report["linear"]
        lines.append(f"  linear spacing:  mean {linear['mean']:.4f}, max {linear['max']:.4f}, "
                     f"CV {linear['cv']:.3f}   (even-motion CV / linear CV = {report['cv_ratio']:.2f})")
    return "\n".join(lines)
