"""`ldm animate`: render a latent walk to numbered PNGs, a GIF and an MP4, resumably.

    result = animate(WalkSettings(pipeline="runs/shapes/pipeline", out="walks/demo",
                                  prompts=["a red circle", "a blue square"], seeds=[1, 2]))
    result = animate(WalkSettings(..., audio="song.mp3", audio_start=30, audio_end=60))

The output folder holds everything a render needs to resume:

    OUT/settings.json          what the frames depend on; a rerun with other settings is an error
    OUT/timeline.json          frame count, fps, the keyframes' frames, the audio target per step
    OUT/frames/frame_00000.png the walk's frames (plus times.json: each frame's timeline position)
    OUT/even-motion/pass-N/    even or audio motion: the probe renders that placed the frames
    OUT/even-motion/jumps/     the frames the jump search rendered, and jumps.json: what it found
    OUT/walk.gif, walk.mp4     assembled from frames/ at the end of every run (the MP4 with the audio)
    OUT/smoothness.json        adjacent-frame distance: mean, max, coefficient of variation; with
                               audio, how closely it followed the audio target
    OUT/motion.png             with audio: frame-to-frame distance against the audio target

A rerun renders only the frames missing on disk (each PNG is written whole or not at all). Under
`accelerate launch`, every process renders its share of the missing frames and the main process
assembles the videos once all are done.

Even motion (the default without audio) and audio motion (the default with it): the walk is first
rendered at linear positions (pass 0, which is also the "linear" baseline in the report); the
distances between its frames give the path's arc length, and the next pass places frames so that
each step covers an equal share of it, or a share in proportion to the audio target
(`ldm.apps.animate.spacing.paced_times`). Each later pass refines the estimate with every frame
rendered so far; the last pass is the walk itself. Each pass renders the walk once more (less the
keyframes, which are copied): one pass doubles the cost of a linear render.

Between the probe pass and the next, the jumps of a diffusion walk (switches between two pictures
that no re-spacing can spread, `ldm.apps.animate.jumps`) are searched for by bisection, one batch
of renders per halving, and their frames dissolved; `dissolve_jumps=False` (`--keep-jumps`) skips it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ldm.apps.animate import spacing, video
from ldm.apps.animate.jumps import Jump, dissolve_positions, find_jumps, jump_at
from ldm.apps.animate.settings import (
    SETTINGS_FILE,
    WalkSettings,
    check_saved_settings,
    render_settings,
    resolve,
)
from ldm.apps.animate.timeline import (
    TIMELINE_FILE,
    WalkPlan,
    linear_positions,
    plan_walk,
    read_plan,
    write_plan,
)
from ldm.apps.processes import inference_processes
from ldm.core.atomic import atomic_write_bytes
from ldm.core.errors import LdmError
from ldm.metrics import smoothness

TIMES_FILE = "times.json"
REPORT_FILE = "smoothness.json"
FRAMES_DIR = "frames"
PASSES_DIR = "even-motion"
JUMPS_DIR = "jumps"  # in PASSES_DIR
JUMPS_FILE = "jumps.json"
MOTION_PLOT = "motion.png"


@dataclass
class AnimationResult:
    out: Path
    frames: int  # frames in the walk
    rendered: int  # frames rendered by this run (the rest were on disk, or copied from a probe pass)
    gif: Path | None
    mp4: Path | None
    report: dict


def _write_json(path: Path, data) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


# ---- rendering -----------------------------------------------------------------------------------

def build_renderer(s: WalkSettings, device):
    """The walk's renderer, with its keyframes made (this is where models load)."""
    from ldm.apps.animate import renderers

    if not s.uses_diffusion:
        vae, native = _load_autoencoder(s.vae or s.pipeline, device)
        return renderers.autoencoder_walk(vae, s.images, (s.width or native, s.height or native), s.loop)
    from ldm.sampling.pipeline_io import load_pipeline
    from ldm.sampling.samplers import make_sampler

    pipe = load_pipeline(s.pipeline, device=device, loras=s.loras, vae=s.vae)
    pipe.scheduler = make_sampler(s.sampler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)  # the bar that counts is the one over frames
    size = (s.width or pipe.image_size, s.height or pipe.image_size)
    if s.kind == "image":
        return renderers.image_walk(pipe, s.images, s.captions, s.negative_prompt, s.loop, s.steps,
                                    s.guidances, size)
    prompts = s.prompts if s.kind == "prompt" else s.prompts * len(s.seeds)
    return renderers.prompt_walk(pipe, prompts, s.seeds, s.negative_prompt, s.loop, s.steps, s.guidances, size)


def _autoencoder_folder(path: str) -> Path:
    """The autoencoder of RUN/pipeline (its vae/) or RUN/vae itself, or an LdmError."""
    path = Path(path)
    for folder in (path / "vae", path):
        if (folder / "config.json").is_file():
            return folder
    raise LdmError(f"no autoencoder at {path}: expected RUN/pipeline (with vae/) or RUN/vae")


def _load_autoencoder(path: str, device):
    """(vae, image size): at the diffusion model's resolution when `path` is a pipeline."""
    from ldm.components.autoencoder import load_vae
    from ldm.sampling.pipeline_io import image_size

    vae = load_vae(_autoencoder_folder(path)).to(device)
    if (Path(path) / "unet" / "config.json").is_file():
        return vae, image_size(path)
    return vae, vae.config.sample_size


def frame_metadata(s: WalkSettings, position: float, jumps: list[Jump] = ()) -> dict[str, str]:
    """PNG text: where the frame is on the walk and what made it."""
    i, j, u = spacing.locate(position, s.num_keyframes, s.loop)
    meta = {"ldm_walk": s.kind, "position": f"{position:.6f}", "keyframes": f"{i} -> {j}", "u": f"{u:.6f}"}
    jump = jump_at(jumps, position)
    if jump is not None:  # not sampled: a blend of the latents at the jump's ends
        meta["dissolve"] = f"{jump.start:.6f} -> {jump.end:.6f}, weight {jump.weight(position):.4f}"
    if s.uses_diffusion:
        prompts = s.prompts * s.num_keyframes if s.kind == "seed" else (s.prompts or s.captions)
        meta["prompt"] = prompts[i] if u == 0 else f"{prompts[i]} -> {prompts[j]}"
        if s.seeds:
            meta["seed"] = str(s.seeds[i]) if u == 0 else f"{s.seeds[i]} -> {s.seeds[j]}"
        guidance = s.guidances[i] + (s.guidances[j] - s.guidances[i]) * u
        meta.update(negative_prompt=s.negative_prompt, steps=str(s.steps), guidance=f"{guidance:g}",
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
                video.save_frame(folder, i, frame, frame_metadata(s, times[i], renderer.jumps))
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


def render_batched(s: WalkSettings, renderer, times: list[float]) -> list[np.ndarray]:
    """Frames at `times`, rendered --batch-size at a time."""
    return [frame for start in range(0, len(times), s.batch_size)
            for frame in renderer.render(times[start: start + s.batch_size])]


def probe_frames(s: WalkSettings, rendered: dict[float, Path]) -> tuple[list[float], list[np.ndarray]]:
    """Every frame rendered so far in timeline order; a loop's closing position ends it with the
    first frame again (the closing segment ends where the walk began)."""
    positions = sorted(rendered)
    frames = [video.read_frame(rendered[p]) for p in positions]
    if s.loop:
        positions.append(float(spacing.segment_count(s.num_keyframes, s.loop)))
        frames.append(frames[0])
    return positions, frames


def dissolve_jumps(s: WalkSettings, renderer, rendered: dict[float, Path], out: Path,
                   state) -> tuple[dict[float, Path], int]:
    """Find the walk's jumps in the probe frames (once: a rerun reads OUT/even-motion/jumps back),
    give them to the renderer, and decode a few dissolve frames in each. Returns the frames the
    search made (position -> PNG) and how many this run rendered."""
    folder = out / PASSES_DIR / JUMPS_DIR
    record = folder / JUMPS_FILE
    made = 0
    if state.is_main_process and not record.is_file():
        pair = frame_distance(s).consecutive
        jumps, searched = find_jumps(*probe_frames(s, rendered), lambda times: render_batched(s, renderer, times),
                                     lambda a, b: pair([a, b])[0])
        renderer.jumps = jumps
        dissolves = dissolve_positions(jumps)
        searched.update(zip(dissolves, render_batched(s, renderer, dissolves)))
        positions = sorted(searched)
        for i, position in enumerate(positions):
            video.save_frame(folder, i, searched[position], frame_metadata(s, position, jumps))
        _write_json(record, {"jumps": [jump.as_dict() for jump in jumps], "positions": positions})
        made = len(positions)
    state.wait_for_everyone()
    saved = json.loads(record.read_text())
    renderer.jumps = [Jump(**jump) for jump in saved["jumps"]]
    return {p: video.frame_path(folder, i) for i, p in enumerate(saved["positions"])}, made


def frame_distance(s: WalkSettings) -> smoothness.FrameDistance:
    if s.distance_model is None:
        return smoothness.PIXEL_DISTANCE
    return smoothness.clip_distance(str(Path(s.distance_model).resolve()))


def next_times(s: WalkSettings, plan: WalkPlan, rendered: dict[float, Path]) -> list[float]:
    """Even- or audio-motion positions from every frame rendered so far (position -> PNG)."""
    positions, frames = probe_frames(s, rendered)
    gaps = frame_distance(s).consecutive(frames)
    intervals = np.diff(plan.keyframe_frames).tolist() if plan.fixed else None
    weights = plan.target if s.motion == "audio" else None
    return spacing.paced_times(positions, gaps, s.num_keyframes, s.loop, plan.steps, intervals, weights)


# ---- the whole render ----------------------------------------------------------------------------

def animate(settings: WalkSettings) -> AnimationResult:
    from ldm.sampling.pipeline_io import autoencoder_factor, check_autoencoder_swap, check_image_size

    s = resolve(settings)
    out = Path(s.out)
    if s.uses_diffusion:
        from ldm.sampling.lora import check_loras
        from ldm.sampling.pipeline_io import check_pipeline_folder

        check_pipeline_folder(s.pipeline)
        check_loras(s.loras, s.pipeline)
        if s.vae is not None:
            check_autoencoder_swap(s.pipeline, s.vae)
    check_image_size(autoencoder_factor(_autoencoder_folder(s.pipeline)), s.height, s.width)
    plan = plan_walk(s)  # decodes the audio: its mistakes are found before anything is written
    current = render_settings(s)
    state = inference_processes()
    check_saved_settings(out, current)
    state.wait_for_everyone()  # every process has checked before the main one writes
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / SETTINGS_FILE, current)
        write_plan(plan, out / TIMELINE_FILE)
    state.wait_for_everyone()

    renderer = build_renderer(s, state.device)
    times = linear_positions(plan.keyframe_frames, s.loop)
    passes = s.even_passes if s.respaced else 0
    rendered_total, rendered_frames = 0, {}
    for p in range(passes + 1):
        last = p == passes
        folder = out / FRAMES_DIR if last else out / PASSES_DIR / f"pass-{p}"
        desc = "frames" if passes == 0 else f"{'frames' if last else 'probe'} (pass {p + 1}/{passes + 1})"
        rendered_total += render_pass(s, renderer, times, folder, state, rendered_frames, desc)
        rendered_frames.update({t: video.frame_path(folder, i) for i, t in enumerate(times)})
        if p == 0 and not last and s.dissolve_jumps and s.uses_diffusion:
            searched, made = dissolve_jumps(s, renderer, rendered_frames, out, state)
            rendered_frames.update(searched)
            rendered_total += made
        if not last:
            times = next_times(s, plan, rendered_frames)

    result = AnimationResult(out, len(times), rendered_total, None, None, {})
    if state.is_main_process:
        result = _finish(s, plan, out, rendered_total)
    state.wait_for_everyone()
    return result


def _finish(s: WalkSettings, plan: WalkPlan, out: Path, rendered: int) -> AnimationResult:
    """Videos, the smoothness report and (with audio) the motion plot, from the frames on disk."""
    from ldm.apps.animate.plot import plot_motion

    frames = video.read_frames(out / FRAMES_DIR, plan.frames)
    shown = video.enlarge(frames, s.video_scale)
    gif = video.write_gif(shown, out / video.GIF_NAME, s.fps)
    soundtrack = video.Soundtrack(s.audio, plan.audio_start) if s.audio is not None else None
    mp4 = video.write_mp4(shown, out / video.MP4_NAME, s.fps, soundtrack)
    report = smoothness_report(s, plan, out, frames)
    _write_json(out / REPORT_FILE, report)
    if plan.target is not None:
        plot_motion(report["distances"], plan, report["audio"]["correlation"], out / MOTION_PLOT)
    return AnimationResult(out, plan.frames, rendered, gif, mp4, report)


def saved_plan(s: WalkSettings, out: Path) -> WalkPlan:
    """The plan a walk folder was rendered with (a folder from before timelines: planned anew)."""
    path = out / TIMELINE_FILE
    return read_plan(path) if path.is_file() else plan_walk(resolve(s))


def smoothness_report(s: WalkSettings, plan: WalkPlan, out: Path, frames) -> dict:
    """Adjacent-frame distances of the walk and their summary; with a probe pass, the same for
    linear spacing; with audio, how closely the distances followed the audio target."""
    distance = frame_distance(s)
    distances = smoothness.adjacent_distances(frames, s.loop, distance)
    report = {"distance": distance.name, "frames": len(frames), "fps": plan.fps, "loop": s.loop,
              "motion": s.motion, "walk": smoothness.summarize(distances)}
    if s.loop:
        report["walk"]["closing"] = distances[-1]  # last frame -> first, as the video repeats
    linear_distances = None
    if s.respaced:
        linear_frames = video.read_frames(out / PASSES_DIR / "pass-0", plan.frames)
        linear_distances = smoothness.adjacent_distances(linear_frames, s.loop, distance)
        report["linear"] = smoothness.summarize(linear_distances)
        report["cv_ratio"] = report["walk"]["cv"] / max(report["linear"]["cv"], 1e-12)
    record = out / PASSES_DIR / JUMPS_DIR / JUMPS_FILE  # only there when this walk dissolves jumps
    if record.is_file():
        jumps = [Jump(**jump) for jump in json.loads(record.read_text())["jumps"]]
        times = json.loads((out / FRAMES_DIR / TIMES_FILE).read_text())
        report["jumps"] = {"found": len(jumps),
                           "dissolved_frames": sum(jump_at(jumps, t) is not None for t in times),
                           "intervals": [jump.as_dict() for jump in jumps]}
    if plan.target is not None:
        report["audio"] = smoothness.against_target(distances, plan.target)
        if linear_distances is not None:
            report["audio"]["linear_correlation"] = smoothness.against_target(linear_distances,
                                                                              plan.target)["correlation"]
    report["distances"] = distances  # one per step, in order (a loop's last: the closing step)
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
                     f"CV {linear['cv']:.3f}   ({report['motion']}-motion CV / linear CV = "
                     f"{report['cv_ratio']:.2f})")
    if "jumps" in report:
        jumps = report["jumps"]
        lines.append(f"  jumps dissolved: {jumps['found']} ({jumps['dissolved_frames']} frames are dissolves)")
    if "audio" in report:
        audio = report["audio"]
        linear = (f" (linear spacing: {audio['linear_correlation']:.2f})" if "linear_correlation" in audio
                  else "")
        lines.append(f"  against the audio target: correlation {audio['correlation']:.2f}{linear}, "
                     f"CV of distance / target {audio['cv']:.3f}")
    return "\n".join(lines)
