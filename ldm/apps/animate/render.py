"""`ldm animate`: render a latent walk to numbered PNGs, a GIF and an MP4, resumably.

    result = animate(WalkSettings(pipeline="runs/shapes/pipeline", out="walks/demo",
                                  prompts=["a red circle", "a blue square"], seeds=[1, 2]))
    result = animate(WalkSettings(..., audio="song.mp3", audio_start=30, audio_end=60))

The whole render, in order: the settings resolved and checked (`resolve`) and the walk planned on
its clock (`timeline.plan_walk`) before any model loads; the settings and plan saved in the output
folder (`layout` lists what it holds), so a rerun with other settings is refused; the renderer
built (`renderers.build_renderer`: the models load); the passes rendered (`passes`: a linear probe,
the jump search and the re-spaced walk, or one linear pass); then the videos, the smoothness
report (`smoothness_report`) and, with audio, the motion plot, from the frames on disk.

A rerun renders only the frames missing on disk. Under `accelerate launch`, every process renders
its share of the missing frames and the main process assembles the videos once all are done.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ldm.apps.animate import video
from ldm.apps.animate.layout import (
    FRAMES_DIR,
    GIF_NAME,
    MOTION_PLOT,
    MP4_NAME,
    REPORT_FILE,
    SETTINGS_FILE,
    TIMELINE_FILE,
    pass_folder,
    write_json,
)
from ldm.apps.animate.passes import dissolve_jumps, next_times, render_pass
from ldm.apps.animate.plot import plot_motion
from ldm.apps.animate.renderers import autoencoder_folder, build_renderer
from ldm.apps.animate.resolve import resolve
from ldm.apps.animate.saved_settings import check_saved_settings, render_settings
from ldm.apps.animate.settings import WalkSettings
from ldm.apps.animate.smoothness_report import smoothness_report
from ldm.apps.animate.timeline import WalkPlan, linear_positions, plan_walk, write_plan
from ldm.apps.processes import inference_processes
from ldm.sampling.lora import check_loras
from ldm.sampling.pipeline_io import (
    autoencoder_factor,
    check_autoencoder_swap,
    check_image_size,
    check_pipeline_folder,
    check_prompts,
)


@dataclass
class AnimationResult:
    out: Path
    frames: int  # frames in the walk
    rendered: int  # frames rendered by this run (the rest were on disk, or copied from a probe pass)
    gif: Path | None
    mp4: Path | None
    report: dict


def animate(settings: WalkSettings) -> AnimationResult:
    s = resolve(settings)
    out = Path(s.out)
    _check_models(s)
    plan = plan_walk(s)  # decodes the audio: its mistakes are found before anything is written
    current = render_settings(s)
    state = inference_processes()
    check_saved_settings(out, current)
    state.wait_for_everyone()  # every process has checked before the main one writes
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / SETTINGS_FILE, current)
        write_plan(plan, out / TIMELINE_FILE)
    state.wait_for_everyone()

    renderer = build_renderer(s, state.device)
    times = linear_positions(plan.keyframe_frames, s.loop)
    passes = s.even_passes if s.respaced else 0
    rendered_total, rendered_frames = 0, {}
    for p in range(passes + 1):
        last = p == passes
        folder = out / FRAMES_DIR if last else pass_folder(out, p)
        desc = "frames" if passes == 0 else f"{'frames' if last else 'probe'} (pass {p + 1}/{passes + 1})"
        rendered_total += render_pass(s, renderer, times, folder, state, rendered_frames, desc)
        rendered_frames.update({t: video.frame_path(folder, i) for i, t in enumerate(times)})
        if p == 0 and not last and s.dissolves:
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


def _check_models(s: WalkSettings) -> None:
    """The model folders the walk names, read from their configs (no weights loaded)."""
    if s.uses_diffusion:
        check_pipeline_folder(s.pipeline, None if s.mask else "walk without a mask to repaint: give --init-image "
                              "IMG and --mask MASK (its white part walks)")
        check_loras(s.loras, s.pipeline)
        check_prompts(s.pipeline, s.prompts + s.captions + [s.negative_prompt], s.prompt_chunks, s.embeddings)
        if s.vae is not None:
            check_autoencoder_swap(s.pipeline, s.vae)
    check_image_size(autoencoder_factor(autoencoder_folder(s.pipeline)), s.height, s.width)


def _finish(s: WalkSettings, plan: WalkPlan, out: Path, rendered: int) -> AnimationResult:
    """Videos, the smoothness report and (with audio) the motion plot, from the frames on disk."""
    frames = video.read_frames(out / FRAMES_DIR, plan.frames)
    shown = video.enlarge(frames, s.video_scale)
    gif = video.write_gif(shown, out / GIF_NAME, s.fps)
    soundtrack = video.Soundtrack(s.audio, plan.audio_start) if s.audio is not None else None
    mp4 = video.write_mp4(shown, out / MP4_NAME, s.fps, soundtrack)
    report = smoothness_report(s, plan, out, frames)
    write_json(out / REPORT_FILE, report)
    if plan.target is not None:
        plot_motion(report["distances"], plan, report["audio"]["correlation"], out / MOTION_PLOT)
    return AnimationResult(out, plan.frames, rendered, gif, mp4, report)
