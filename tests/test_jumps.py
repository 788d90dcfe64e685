"""Jumps in walks: found by bisection, told apart from fast smooth motion, dissolved by the renderer
and re-spaced into even motion; flashes (a switch away and back between two frames) found among
the probes and in the walk's own frames, and dissolved across; the searches' results kept on disk
for resumed renders."""

import json

import numpy as np
import pytest
import torch

from ldm.apps.animate import spacing, video
from ldm.apps.animate.jumps import (
    BISECTIONS,
    EXAMINE_RATIO,
    Jump,
    dissolve_positions,
    find_flashes,
    find_jumps,
    jump_at,
)
from ldm.apps.animate.render import animate
from ldm.apps.animate.settings import WalkSettings
from ldm.metrics import smoothness
from ldm.metrics.smoothness import frame_distance

SWITCH = 0.4137  # where the synthetic walk below switches pictures
PROBES = list(np.linspace(0.0, 1.0, 8))


def frame(brightness: float, square: float) -> np.ndarray:
    """A 32x32 frame: a gray level that drifts, and a white square with opacity `square`."""
    image = np.full((32, 32, 3), brightness, dtype=np.float64)
    image[8:24, 8:24] = (1 - square) * image[8:24, 8:24] + square * 255.0
    return image.round().astype(np.uint8)


def switching(t: float) -> np.ndarray:
    """A slow drift with a square that appears all at once at SWITCH."""
    return frame(60 + 40 * t, float(t >= SWITCH))


def fading(t: float) -> np.ndarray:
    """The same drift with the square fading in quickly, over [0.40, 0.45]: fast, but smooth."""
    return frame(60 + 40 * t, float(np.clip((t - 0.40) / 0.05, 0, 1)))


def render_with(picture):
    return lambda times: [picture(t) for t in times]


def dissolved(picture, jumps: list[Jump]):
    """`picture` with the frames inside `jumps` cross-dissolved between the jump's ends, in pixels
    (the renderer blends latents; on these pictures it comes to the same)."""
    def dissolving(t: float) -> np.ndarray:
        jump = jump_at(jumps, t)
        if jump is None:
            return picture(t)
        weight = jump.weight(t)
        return ((1 - weight) * picture(jump.start).astype(float) + weight * picture(jump.end)).round().astype(np.uint8)

    return dissolving


def test_a_switch_is_found_to_within_a_64th_of_a_probe_step():
    jumps, searched = find_jumps(PROBES, [switching(t) for t in PROBES], render_with(switching), frame_distance)
    assert len(jumps) == 1
    jump = jumps[0]
    assert jump.start < SWITCH <= jump.end
    assert jump.end - jump.start == pytest.approx((PROBES[1] - PROBES[0]) / 2 ** BISECTIONS)
    assert jump.distance == pytest.approx(frame_distance(switching(jump.start), switching(jump.end)))
    assert len(searched) == BISECTIONS  # one render a halving


def test_two_switches_within_one_probe_step_are_two_jumps():
    def two_switches(t: float) -> np.ndarray:
        image = switching(t)
        if t >= 0.42:  # a second square, in another corner, a little later
            image[0:8, 0:8] = 255
        return image

    jumps, _ = find_jumps(PROBES, [two_switches(t) for t in PROBES], render_with(two_switches), frame_distance)
    assert len(jumps) == 2
    assert jumps[0].start < SWITCH <= jumps[0].end < jumps[1].start < 0.42 <= jumps[1].end


def test_fast_smooth_motion_is_not_a_jump():
    jumps, searched = find_jumps(PROBES, [fading(t) for t in PROBES], render_with(fading), frame_distance)
    assert jumps == [] and searched  # examined (a few halvings), then let go


FLASH = (0.49, 0.51)  # where the picture below flashes: inside one probe step, away from every probe
WALK = list(np.linspace(0.0, 1.0, 21))  # frames of a walk, one of them (0.5) inside the flash


def flashing(t: float, flash: tuple[float, float] = FLASH) -> np.ndarray:
    """The slow drift with the square shown only inside `flash`: a switch away and back."""
    return frame(60 + 40 * t, float(flash[0] <= t < flash[1]))


def flashes_shown(frames: list[np.ndarray]) -> list[int]:
    """Frames far from both neighbours (above the jump search's bar) while those are close."""
    gaps = np.array([frame_distance(a, b) for a, b in zip(frames[:-1], frames[1:])])
    bar = EXAMINE_RATIO * float(np.median(gaps))
    return [k for k in range(1, len(gaps)) if gaps[k - 1] > bar and gaps[k] > bar
            and frame_distance(frames[k - 1], frames[k + 1]) <= bar]


def test_a_flash_between_two_probes_is_unseen_by_the_probe_search_and_found_in_the_walk():
    unseen, _ = find_jumps(PROBES, [flashing(t) for t in PROBES], render_with(flashing), frame_distance)
    assert unseen == []  # the probe step's ends look alike: its length is short
    assert flashes_shown([flashing(t) for t in WALK]) == [10]

    renders = []

    def counted(times):
        renders.append(len(times))
        return [flashing(t) for t in times]

    jumps, searched = find_flashes(WALK, [flashing(t) for t in WALK], counted, frame_distance)
    assert len(jumps) == 1
    jump, found_to = jumps[0], (WALK[1] - WALK[0]) / 2 ** BISECTIONS
    assert FLASH[0] - found_to <= jump.start < FLASH[0] and FLASH[1] <= jump.end < FLASH[1] + found_to
    assert jump.distance < 0.01  # its ends look alike: the dissolve stays on the drift
    assert renders == [2] * BISECTIONS and len(searched) == 2 * BISECTIONS  # the flash's two steps, bisected
    assert flashes_shown([dissolved(flashing, jumps)(t) for t in WALK]) == []


def test_a_flash_that_a_probe_shows_is_one_jump_across_both_switches():
    wide = (0.40, 0.45)  # holds the probe at 3/7

    def picture(t):
        return flashing(t, wide)

    jumps, _ = find_jumps(PROBES, [picture(t) for t in PROBES], render_with(picture), frame_distance)
    assert len(jumps) == 1 and jumps[0].start < wide[0] and wide[1] <= jumps[0].end < PROBES[4]
    assert flashes_shown([dissolved(picture, jumps)(t) for t in WALK]) == []


def test_a_keyframe_or_a_fast_smooth_flash_is_not_dissolved():
    def keyframe_apart(t):  # a two-segment walk whose middle keyframe alone shows the square
        return frame(60 + 20 * t, float(t == 1.0))

    positions = list(np.linspace(0.0, 2.0, 9))
    assert find_flashes(positions, [keyframe_apart(t) for t in positions], render_with(keyframe_apart),
                        frame_distance) == ([], {})

    def pulse(t):  # the square fades in and out over 0.44..0.56: fast, but smooth
        return frame(60 + 40 * t, float(np.clip(1 - abs(t - 0.5) / 0.06, 0, 1)))

    jumps, searched = find_flashes(WALK, [pulse(t) for t in WALK], render_with(pulse), frame_distance)
    assert flashes_shown([pulse(t) for t in WALK]) == [10] and jumps == [] and searched  # examined, let go


def test_dissolve_positions_fall_inside_their_jump():
    jumps = [Jump(0.2, 0.3, 1.0), Jump(1.5, 1.6, 2.0)]
    positions = dissolve_positions(jumps)
    assert len(positions) == 8 and all(jump_at(jumps, p) is not None for p in positions)
    assert jump_at(jumps, 0.2) is None and jump_at(jumps, 0.3) is None  # the ends are samples
    assert jumps[0].weight(0.25) == pytest.approx(0.5)


def even_walk(picture, extra: dict[float, np.ndarray]) -> list[np.ndarray]:
    """Frames of an even-motion walk of 16 frames (one pass) from probes plus `extra` frames."""
    rendered = {t: picture(t) for t in PROBES} | extra
    positions = sorted(rendered)
    gaps = [frame_distance(a, b) for a, b in zip([rendered[p] for p in positions[:-1]],
                                                  [rendered[p] for p in positions[1:]])]
    return [picture(t) for t in spacing.even_times(positions, gaps, 2, 16, loop=False)]


def test_dissolving_the_jump_makes_even_motion_even():
    cv = {}
    kept, _ = find_jumps(PROBES, [switching(t) for t in PROBES], render_with(switching), frame_distance)
    cv["kept"] = smoothness.summarize(smoothness.adjacent_distances(even_walk(switching, {}), loop=False))["cv"]
    jump = kept[0]
    dissolving = dissolved(switching, [jump])
    probes = {t: dissolving(t) for t in [jump.start, jump.end, *dissolve_positions([jump])]}
    frames = even_walk(dissolving, probes)
    cv["dissolved"] = smoothness.summarize(smoothness.adjacent_distances(frames, loop=False))["cv"]
    assert cv["kept"] > 1.0 and cv["dissolved"] < 0.3, cv


def test_the_renderer_dissolves_frames_inside_a_jump(kl_pipeline_path):
    from ldm.apps.animate.renderers import prompt_walk
    from ldm.core.images import unit_to_uint8
    from ldm.sampling.samplers import DETERMINISTIC_SAMPLER
    from ldm.sampling.text_to_image import sampling_pipeline

    pipe = sampling_pipeline(kl_pipeline_path, DETERMINISTIC_SAMPLER)  # the walks' sampler
    pipe.set_progress_bar_config(disable=True)
    walk = prompt_walk(pipe, ["a red circle", "a blue square"], [1, 2], "", False, 2, [4.0, 4.0], (32, 32))
    walk.jumps = [Jump(0.3, 0.5, 1.0)]
    frames = walk.render([0.1, 0.4])
    start, end = walk.sample([0.3, 0.5])  # sampled together, as the renderer samples a jump's ends
    expected = torch.stack([walk.sample([0.1])[0], spacing.lerp(start, end, 0.5)])  # only 0.1 is sampled
    assert np.array_equal(frames, unit_to_uint8(pipe.latents_to_images(expected, output_type="np")))


FAST = dict(steps=2, batch_size=4, fps=10.0, frames=6)


def test_a_walk_records_its_jumps_and_a_rerun_reads_them_back(kl_pipeline_path, tmp_path, monkeypatch):
    settings = WalkSettings(pipeline=str(kl_pipeline_path), out=str(tmp_path / "walk"),
                            prompts=["a red circle", "a blue square"], seeds=[1, 2], **FAST)
    first = animate(settings)
    record = json.loads((tmp_path / "walk" / "even-motion" / "jumps" / "jumps.json").read_text())
    assert first.report["jumps"]["found"] == len(record["jumps"]) + first.report["jumps"]["flashes"]
    assert len(record["positions"]) == len(list((tmp_path / "walk" / "even-motion" / "jumps").glob("*.png")))

    def no_search(*args, **kwargs):
        raise AssertionError("searched again")

    monkeypatch.setattr("ldm.apps.animate.passes.find_jumps", no_search)
    assert animate(settings).rendered == 0


class PictureWalk:
    """A stand-in for the diffusion renderer: frames of `picture`, dissolved inside its jumps; each
    call recorded, and call number `dies_at` killed, as an interrupted render is."""

    def __init__(self, picture, dies_at: int | None = None):
        self.picture, self.dies_at, self.jumps, self.calls = picture, dies_at, [], []

    def render(self, times: list[float]) -> np.ndarray:
        self.calls.append(times)
        if len(self.calls) == self.dies_at:
            raise KeyboardInterrupt
        return np.stack([dissolved(self.picture, self.jumps)(t) for t in times])


def test_a_walk_dissolves_a_flash_its_frames_show_once_and_resumes_to_the_same_bytes(kl_pipeline_path, tmp_path,
                                                                                     monkeypatch):
    from PIL import Image

    def walk(picture, out: str, dies_at: int | None = None):
        renderer = PictureWalk(picture, dies_at)
        monkeypatch.setattr("ldm.apps.animate.render.build_renderer", lambda s, device: renderer)
        settings = WalkSettings(pipeline=str(kl_pipeline_path), out=str(tmp_path / out),
                                prompts=["a red circle", "a blue square"], seeds=[1, 2], **{**FAST, "frames": 8})
        return animate(settings), renderer

    def drift(t):  # faster and faster: even motion moves the walk's frames off the probes
        return frame(40 + 80 * t * t, 0.0)

    clean, _ = walk(drift, "clean")
    times = json.loads((clean.out / "frames" / "times.json").read_text())
    probes = json.loads((clean.out / "even-motion" / "pass-0" / "times.json").read_text())
    apart = [min(abs(t - p) for p in probes) for t in times]
    i = int(np.argmax(apart))  # a frame of the walk that no probe is near: the flash goes around it

    def flashing(t):
        return frame(40 + 80 * t * t, float(abs(t - times[i]) < apart[i] / 2))

    assert flashes_shown([flashing(t) for t in times]) == [i]  # what the walk would show
    result, renderer = walk(flashing, "flash")
    frames = video.read_frames(result.out / "frames", len(times))
    assert json.loads((result.out / "frames" / "times.json").read_text()) == times
    assert flashes_shown(frames) == [] and "dissolve" in Image.open(video.frame_path(result.out / "frames", i)).text
    assert result.report["jumps"]["flashes"] == result.report["jumps"]["found"] == 1
    assert result.rendered == clean.rendered + 2 * BISECTIONS + 1  # the flash's search, then its frame again

    def no_search(*args, **kwargs):
        raise AssertionError("searched again")

    with monkeypatch.context() as patched:
        patched.setattr("ldm.apps.animate.passes.find_flashes", no_search)
        assert walk(flashing, "flash")[0].rendered == 0

    calls = len(renderer.calls)
    for dies_at in (calls - BISECTIONS, calls):  # the flash's search's first render; its frame rendered again
        with pytest.raises(KeyboardInterrupt):
            walk(flashing, f"killed-{dies_at}", dies_at)
        resumed, _ = walk(flashing, f"killed-{dies_at}")
        assert all(video.frame_path(resumed.out / "frames", k).read_bytes()
                   == video.frame_path(result.out / "frames", k).read_bytes() for k in range(len(times)))
        assert resumed.report["jumps"] == result.report["jumps"]


def test_keep_jumps_skips_the_search(kl_pipeline_path, tmp_path):
    result = animate(WalkSettings(pipeline=str(kl_pipeline_path), out=str(tmp_path / "walk"),
                                  prompts=["a red circle", "a blue square"], seeds=[1, 2], dissolve_jumps=False,
                                  **FAST))
    assert "jumps" not in result.report and not (tmp_path / "walk" / "even-motion" / "jumps").exists()
    saved = json.loads((tmp_path / "walk" / "settings.json").read_text())
    assert saved["dissolve_jumps"] is False


def test_keep_jumps_from_the_command_line(kl_pipeline_path, tmp_path, capsys):
    from ldm.cli import main

    main(["animate", str(kl_pipeline_path), "--prompts", "a red circle", "a blue square", "--frames", "4",
          "--steps", "2", "--out", str(tmp_path / "walk"), "--keep-jumps"])
    assert json.loads((tmp_path / "walk" / "settings.json").read_text())["dissolve_jumps"] is False
    assert "jumps dissolved" not in capsys.readouterr().out


def test_a_still_walk_with_one_flicker_searches_little():
    """Median step 0: the bar comes from the mean, and the search stays within its budget."""
    def still(t: float) -> np.ndarray:
        return frame(100.0, 0.0) if not 0.5 < t < 0.6 else frame(101.0, 0.0)

    renders = []

    def counted(times):
        renders.append(len(times))
        return [still(t) for t in times]

    jumps, _ = find_jumps(PROBES, [still(t) for t in PROBES], counted, frame_distance)
    assert sum(renders) <= BISECTIONS * (len(PROBES) - 1)
