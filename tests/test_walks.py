"""The maths of walks (slerp, timelines, even-motion re-spacing) and the frame files and videos."""

import numpy as np
import pytest
import torch

from ldm.apps.animate import spacing, video
from ldm.metrics import smoothness


def test_slerp_keeps_the_norm_of_gaussian_noise_and_hits_its_ends():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 8, 8, generator=g), torch.randn(4, 8, 8, generator=g)
    assert torch.allclose(spacing.slerp(a, b, 0.0), a, atol=1e-6)
    assert torch.allclose(spacing.slerp(a, b, 1.0), b, atol=1e-6)
    middle_slerp, middle_lerp = spacing.slerp(a, b, 0.5), spacing.lerp(a, b, 0.5)
    # Independent Gaussian vectors are nearly orthogonal: lerp shrinks the norm by ~1/sqrt(2).
    assert middle_slerp.norm() > 0.95 * min(a.norm(), b.norm())
    assert middle_lerp.norm() < 0.8 * min(a.norm(), b.norm())


def test_slerp_falls_back_to_lerp_for_nearly_parallel_vectors():
    a = torch.ones(16)
    b = a * 2 + 1e-6  # parallel: sin(theta) ~ 0 would divide by zero
    out = spacing.slerp(a, b, 0.25)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, spacing.lerp(a, b, 0.25))


def test_plain_walk_timeline_renders_each_keyframe_once():
    times = spacing.linear_times(num_keyframes=3, frames=5, loop=False)
    assert len(times) == spacing.frame_count(3, 5, False) == 9
    assert times[0] == 0 and times[4] == 1 and times[-1] == 2
    assert len(set(times)) == len(times)


def test_loop_timeline_stops_one_frame_before_its_start():
    times = spacing.linear_times(num_keyframes=2, frames=4, loop=True)
    assert times == pytest.approx([0, 1 / 3, 2 / 3, 1, 4 / 3, 5 / 3])
    assert spacing.locate(times[-1], 2, loop=True) == (1, 0, pytest.approx(2 / 3))


def test_interpolate_passes_through_keyframes():
    keys = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    path = spacing.interpolate(keys, spacing.linear_times(3, 4, False), loop=False, kind="slerp")
    assert path.shape == (7, 2, 4, 4)
    for k, index in enumerate([0, 3, 6]):
        assert torch.equal(path[index], keys[k])


def test_even_times_equalise_arc_length_and_keep_keyframes():
    # A path that moves 9x faster in the second half of each segment.
    samples = np.linspace(0, 2, 41)
    speed = np.where((samples[:-1] % 1) < 0.5, 1.0, 9.0)
    gaps = speed * np.diff(samples)
    times = spacing.even_times(samples, gaps, num_keyframes=3, frames=5, loop=False)
    assert len(times) == 9 and times[0] == 0 and times[4] == 1 and times[8] == 2
    arc = np.interp(times, samples, np.concatenate([[0], np.cumsum(gaps)]))
    steps = np.diff(arc)
    assert steps.std() / steps.mean() < 0.01
    assert np.all(np.diff(times) > 0)


def test_even_times_give_longer_segments_more_frames():
    samples = np.linspace(0, 2, 21)
    gaps = np.where(samples[:-1] < 1, 1.0, 3.0) * np.diff(samples)  # segment 1 is 3x as long
    times = spacing.even_times(samples, gaps, num_keyframes=3, frames=5, loop=False)
    assert len(times) == 9  # as many frames as linear spacing
    assert times.index(1.0) == 2  # 2 intervals for the short segment, 6 for the long one
    assert spacing.share_intervals([1.0, 3.0], 8) == [2, 6]
    shares = spacing.share_intervals([1e-6, 1.0, 1.0], 6)  # a segment of no length still gets one
    assert sum(shares) == 6 and shares[0] == 1 and sorted(shares[1:]) == [2, 3]


def test_even_times_of_a_loop_cover_the_closing_segment():
    samples = np.linspace(0, 2, 21)  # a loop of two keyframes: the closing segment is [1, 2]
    gaps = np.where(samples[:-1] < 1, 1.0, 1.0 + 4 * (samples[:-1] - 1)) * np.diff(samples)
    times = spacing.even_times(samples, gaps, num_keyframes=2, frames=5, loop=True)
    assert len(times) == spacing.frame_count(2, 5, loop=True) == 8
    assert times[0] == 0 and 1.0 in times and max(times) < 2


def test_smoothness_of_a_steady_walk_is_zero_cv_and_a_jump_is_not():
    ramp = [np.full((8, 8, 3), 10 * i, dtype=np.uint8) for i in range(6)]
    assert smoothness.summarize(smoothness.adjacent_distances(ramp, loop=False))["cv"] < 1e-9
    jumpy = ramp[:5] + [np.full((8, 8, 3), 250, dtype=np.uint8)]
    report = smoothness.summarize(smoothness.adjacent_distances(jumpy, loop=False))
    assert report["cv"] > 0.5 and report["max"] > 2 * report["mean"] * 0.9


def test_frames_gif_and_mp4_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (16, 24, 3), dtype=np.uint8) for _ in range(7)]
    for i, f in enumerate(frames):
        video.save_frame(tmp_path, i, f, {"prompt": "x"})
    assert video.existing_frames(tmp_path) == set(range(7))
    assert all(np.array_equal(a, b) for a, b in zip(video.read_frames(tmp_path, 7), frames))
    gif = video.write_gif(frames, tmp_path / "w.gif", fps=10)
    mp4 = video.write_mp4(video.enlarge(frames, 2), tmp_path / "w.mp4", fps=12)
    assert video.video_info(gif) == {"frames": 7, "fps": 10.0}
    assert video.video_info(mp4) == {"frames": 7, "fps": 12.0}
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
