"""A walk's render passes: frames rendered into a folder, resumably, and the probe passes and jump
search that decide where the frames of the next pass go.

Even motion (the default without audio) and audio motion (the default with it): the walk is first
rendered at linear positions (pass 0, which is also the "linear" baseline in the report); the
distances between its frames give the path's arc length, and the next pass places frames so that
each step covers an equal share of it, or a share in proportion to the audio target
(`ldm.apps.animate.spacing.paced_times`). Each later pass refines the estimate with every frame
rendered so far; the last pass is the walk itself. Each pass renders the walk once more (less the
keyframes, which are copied): one pass doubles the cost of a linear render.

Between the probe pass and the next, the jumps of a diffusion walk (switches between two pictures
that no re-spacing can spread, `ldm.apps.animate.jumps`) are searched for by bisection, one batch
of renders per halving, and their frames dissolved. After the last pass, its frames are searched
for flashes (a picture the model switches to and back from between two frames, which no probe
saw): each flash's frame is rendered again as a dissolve. `dissolve_jumps=False` (`--keep-jumps`)
skips both.

A pass renders only the frames missing on disk (each PNG is written whole or not at all). Under
`accelerate launch`, every process renders its share of the missing frames.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ldm.apps.animate import spacing, video
from ldm.apps.animate.jumps import Jump, dissolve_positions, find_flashes, find_jumps, jump_at
from ldm.apps.animate.layout import (
    FLASHES_FILE,
    JUMPS_FILE,
    TIMES_FILE,
    jumps_folder,
    read_jumps,
    write_json,
    write_jumps,
)
from ldm.apps.animate.settings import WalkSettings
from ldm.apps.animate.smoothness_report import frame_distance
from ldm.apps.animate.timeline import WalkPlan
from ldm.core.atomic import atomic_write_bytes
from ldm.core.errors import LdmError


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
        write_json(path, times)
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
    give them to the renderer, and decode a few dissolve frames in each. Returns the frames that
    place the next pass (position -> PNG): `rendered` and the search's, less the samples inside a
    jump (a skipped flash's, which the walk never shows); and how many frames this run rendered."""
    folder = jumps_folder(out)
    record = folder / JUMPS_FILE
    made = 0
    if state.is_main_process and not record.is_file():
        jumps, searched = find_jumps(*probe_frames(s, rendered), partial(render_batched, s, renderer),
                                     _distance_of_two(s))
        renderer.jumps = jumps
        dissolves = dissolve_positions(jumps)
        made = len(searched) + len(dissolves)
        searched = {p: frame for p, frame in searched.items() if jump_at(jumps, p) is None}
        searched.update(zip(dissolves, render_batched(s, renderer, dissolves)))
        positions = sorted(searched)
        for i, position in enumerate(positions):
            video.save_frame(folder, i, searched[position], frame_metadata(s, position, jumps))
        write_jumps(record, jumps, positions=positions)
    state.wait_for_everyone()
    renderer.jumps = read_jumps(record)
    saved = json.loads(record.read_text())["positions"]
    outside = {p: path for p, path in rendered.items() if jump_at(renderer.jumps, p) is None}
    return outside | {p: video.frame_path(folder, i) for i, p in enumerate(saved)}, made


def render_dissolving_flashes(s: WalkSettings, renderer, times: list[float], folder: Path, out: Path, state,
                              reuse: dict[float, Path], desc: str) -> int:
    """The walk's last pass (`render_pass`), then the flashes in its frames found
    (`ldm.apps.animate.jumps`) and their frames rendered again as dissolves; returns how many
    frames were rendered. The search runs once: OUT/even-motion/jumps/flashes.json keeps what it
    found, and a rerun gives those jumps to the renderer before it renders the walk's missing frames.
    A flash's frame is deleted before the record is written, so a run killed in between renders
    it again, sampled, and finds the same flash on its rerun."""
    record = jumps_folder(out) / FLASHES_FILE
    searched_before = record.is_file()
    renderer.jumps = [*renderer.jumps, *read_jumps(record)]
    rendered = render_pass(s, renderer, times, folder, state, reuse, desc)
    if searched_before:
        return rendered
    if state.is_main_process:
        walk = probe_frames(s, {t: video.frame_path(folder, i) for i, t in enumerate(times)})
        flashes, searched = find_flashes(*walk, partial(render_batched, s, renderer), _distance_of_two(s))
        rendered += len(searched)
        for i in [i for i, t in enumerate(times) if jump_at(flashes, t) is not None]:
            video.frame_path(folder, i).unlink()
        write_jumps(record, flashes)
    state.wait_for_everyone()
    renderer.jumps = [*renderer.jumps, *read_jumps(record)]
    return rendered + render_pass(s, renderer, times, folder, state, {}, desc)


def _distance_of_two(s: WalkSettings):
    """The walk's frame distance (`frame_distance`) between two frames."""
    consecutive = frame_distance(s).consecutive
    return lambda a, b: consecutive([a, b])[0]


def next_times(s: WalkSettings, plan: WalkPlan, rendered: dict[float, Path]) -> list[float]:
    """Even- or audio-motion positions from every frame rendered so far (position -> PNG)."""
    positions, frames = probe_frames(s, rendered)
    gaps = frame_distance(s).consecutive(frames)
    intervals = np.diff(plan.keyframe_frames).tolist() if plan.fixed else None
    weights = plan.target if s.motion == "audio" else None
    return spacing.paced_times(positions, gaps, s.num_keyframes, s.loop, plan.steps, intervals, weights)
