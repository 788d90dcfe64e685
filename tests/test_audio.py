"""Walks to music, without a model: audio decoding and analysis on synthetic signals, the timeline
(keyframe times, --timeline files, onsets), and pacing frames by an audio target."""

import subprocess

import numpy as np
import pytest

from ldm.apps.animate import audio, spacing, timeline
from ldm.apps.animate.resolve import resolve
from ldm.apps.animate.settings import WalkSettings
from ldm.core.errors import LdmError
from ldm.metrics import smoothness

RATE = audio.ANALYSIS_RATE


def click_at(seconds: float, length: float) -> np.ndarray:
    """Silence with one short noise burst starting at `seconds`."""
    signal = np.zeros(int(length * RATE), dtype=np.float32)
    start = int(seconds * RATE)
    length = int(0.02 * RATE)
    burst = np.random.default_rng(1).uniform(-1, 1, length) * np.exp(-np.arange(length) / 100)
    signal[start: start + len(burst)] = burst
    return signal


def test_onset_of_a_click_is_found_at_its_time():
    for at in (0.25, 0.7, 1.333):
        onsets = audio.onset_times(audio.onset_strength(click_at(at, 2.0)))
        assert len(onsets) == 1 and abs(onsets[0] - at) < 0.015, (at, onsets)


def test_silence_has_no_onsets_and_energy_follows_loudness():
    assert len(audio.onset_times(audio.onset_strength(np.zeros(RATE, dtype=np.float32)))) == 0
    quiet_then_loud = np.concatenate([0.01 * np.ones(RATE), 0.5 * np.ones(RATE)]).astype(np.float32)
    energy = audio.rms_energy(quiet_then_loud)
    assert len(energy) == pytest.approx(2 * audio.ENVELOPE_RATE, abs=2)
    half = len(energy) // 2
    assert energy[half + 5:].mean() > 20 * energy[: half - 5].mean()


def test_beat_track_clicks_are_found_at_its_tempo():
    track = audio.beat_track(silence=1.0, beats=3.0, bpm=120)
    assert len(track) == 4 * RATE and np.abs(track[: RATE - 10]).max() == 0
    onsets = audio.onset_times(audio.onset_strength(track))
    np.testing.assert_allclose(onsets, 1.0 + 0.5 * np.arange(6), atol=0.015)


def test_wav_flac_ogg_and_mp3_decode_alike(tmp_path):
    wav = audio.write_wav(tmp_path / "beats.wav", audio.beat_track(0.5, 1.5, bpm=120))
    reference = audio.onset_times(audio.onset_strength(audio.read_audio(wav)))
    for suffix in (".flac", ".ogg", ".mp3"):
        other = tmp_path / f"beats{suffix}"
        subprocess.run([audio._ffmpeg(), "-v", "error", "-i", str(wav), str(other)], check=True)
        samples = audio.read_audio(other)
        assert len(samples) / RATE == pytest.approx(2.0, abs=0.03), suffix
        np.testing.assert_allclose(audio.onset_times(audio.onset_strength(samples)), reference, atol=0.015)
    cut = audio.read_audio(wav, start=1.0, end=1.5)
    assert len(cut) == RATE // 2
    assert audio.onset_times(audio.onset_strength(cut)) == pytest.approx([0.0], abs=0.015)  # the beat at 1 s


def test_unreadable_audio_is_one_line(tmp_path):
    with pytest.raises(LdmError, match="audio file not found"):
        audio.read_audio(tmp_path / "missing.wav")
    bad = tmp_path / "bad.mp3"
    bad.write_text("not audio")
    with pytest.raises(LdmError, match="cannot read audio") as err:
        audio.read_audio(bad)
    assert "\n" not in str(err.value)


def test_smoothing_keeps_a_level_and_spreads_a_spike():
    flat = np.full(50, 3.0)
    np.testing.assert_allclose(audio.smooth(flat, 0.1), flat)
    spike = np.zeros(101)
    spike[50] = 1.0
    smoothed = audio.smooth(spike, 0.05)
    assert smoothed.sum() == pytest.approx(1.0) and smoothed.argmax() == 50 and smoothed[50] < 0.3


def test_step_targets_have_a_floor_and_a_peak_of_one():
    rate = 100.0
    envelope = np.concatenate([np.zeros(200), np.ones(200)])  # 2 s of nothing, then 2 s of something
    target = timeline.step_targets(envelope, rate, steps=39, fps=10.0)
    assert len(target) == 39
    assert target[:19] == pytest.approx(timeline.TARGET_FLOOR) and target[21:] == pytest.approx(1.0)
    assert timeline.step_targets(np.zeros(50), rate, 4, 10.0) == pytest.approx(1.0)  # silence: even


def test_paced_times_make_arc_steps_follow_the_weights():
    samples = np.linspace(0, 2, 81)
    gaps = np.where(samples[:-1] < 1, 1.0, 3.0) * np.diff(samples)  # segment 1 three times as long
    arc = np.concatenate([[0], np.cumsum(gaps)])
    weights = np.where(np.arange(16) < 8, 1.0, 3.0)  # keyframe 1 lands exactly on step 8
    times = spacing.paced_times(samples, gaps, num_keyframes=3, loop=False, steps=16, weights=weights)
    assert len(times) == 17 and times[0] == 0 and times[-1] == 2 and 1.0 in times
    steps = np.diff(np.interp(times, samples, arc))
    np.testing.assert_allclose(steps / weights, (steps / weights).mean(), rtol=0.05)  # one pace throughout
    # fixed intervals: keyframe 1 stays on step 4, each segment paced within itself
    fixed = spacing.paced_times(samples, gaps, 3, False, steps=16, intervals=[4, 12], weights=weights)
    assert fixed.index(1.0) == 4
    assert spacing.share_by_weights([1.0, 3.0], np.ones(8)) == [2, 6]


def test_against_target_measures_how_closely_motion_follows():
    target = [0.1, 0.1, 1.0, 0.5, 1.0]
    followed = smoothness.against_target([0.2, 0.2, 2.0, 1.0, 2.0], target)
    assert followed["correlation"] == pytest.approx(1.0) and followed["cv"] == pytest.approx(0.0, abs=1e-12)
    ignored = smoothness.against_target([1.0, 1.0, 1.0, 1.0, 1.0], target)
    assert ignored["correlation"] == 0.0 and ignored["cv"] > 0.5


def test_keyframe_times_become_frames_and_on_beats_snaps_the_inner_ones():
    assert timeline.keyframe_frame_indices([0, 1.0, 2.5], fps=10) == [0, 10, 25]
    with pytest.raises(LdmError, match="fall on the same frame"):
        timeline.keyframe_frame_indices([0, 1.0, 1.02], fps=10)
    onsets = np.array([0.49, 1.0, 1.51, 2.0])
    assert timeline.snap_to_onsets([0, 0.9, 1.6, 3], onsets) == [0, 1.0, 1.51, 3]
    with pytest.raises(LdmError, match="same onset"):
        timeline.snap_to_onsets([0, 0.9, 1.1, 3], onsets)
    with pytest.raises(LdmError, match="no onsets"):
        timeline.snap_to_onsets([0, 1, 3], np.zeros(0))
    assert timeline.linear_positions([0, 2, 6], loop=False) == pytest.approx([0, 0.5, 1, 1.25, 1.5, 1.75, 2])


def test_timeline_file_lists_keyframes(tmp_path):
    path = tmp_path / "walk.yaml"
    path.write_text("- {time: 0, prompt: a red circle, seed: 1}\n"
                    "- {time: 4.5, prompt: a blue square, seed: 2, guidance: 6}\n"
                    "- {time: 9}\n")
    keyframes = timeline.read_timeline(path)
    assert keyframes.kind == "prompt" and keyframes.times == [0, 4.5, 9]
    assert keyframes.prompts == ["a red circle", "a blue square"] and keyframes.seeds == [1, 2]
    assert keyframes.guidances == [None, 6]
    images = tmp_path / "images.yaml"
    images.write_text("- {time: 0, image: a.png, caption: a red circle}\n"
                      "- {time: 2, image: b.png, caption: x}\n")
    assert timeline.read_timeline(images).images == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]


BAD_TIMELINES = [
    ("- {time: 0, prompt: a, image: a.png}\n", "has both a prompt and an image"),
    ("- {time: 0, prompt: a}\n- {time: 1, image: b.png}\n", "mixes image and prompt keyframes"),
    ("- {time: 0, promt: a}\n", "unknown key 'promt'"),
    ("- {prompt: a}\n", "has no time"),
    ("- {time: 0, prompt: a}\n- {time: 1}\n- {time: 2, prompt: b}\n", "no prompt, image or seed"),
    ("time: 0\n", "must be a YAML list"),
    ("- {time: soon, prompt: a}\n", "entry 1: time must be float, got 'soon'"),
    ("- {time: [0, prompt: a\n", "timeline file .* is not valid YAML: line 2, column 1"),
]


@pytest.mark.parametrize("text, message", BAD_TIMELINES, ids=[m for _, m in BAD_TIMELINES])
def test_bad_timeline_files_are_one_line(tmp_path, text, message):
    path = tmp_path / "walk.yaml"
    path.write_text(text)
    with pytest.raises(LdmError, match=message) as err:
        timeline.read_timeline(path)
    assert "\n" not in str(err.value)


def test_the_clock_sets_the_frame_count(tmp_path):
    """fps x seconds: from the times, or from the audio, with the keyframes spread over it."""
    base = dict(pipeline="p", out="o", prompts=["a", "b", "c"], fps=10.0)
    plain = timeline.plan_walk(resolve(WalkSettings(**base, times=[0, 1.5, 4])))
    assert plain.frames == 41 and plain.keyframe_frames == [0, 15, 40]
    assert plain.fixed and plain.target is None
    loop = timeline.plan_walk(resolve(WalkSettings(**base, times=[0, 1, 2, 3], loop=True)))
    assert loop.frames == 30 and loop.keyframe_frames == [0, 10, 20, 30]
    wav = audio.write_wav(tmp_path / "beats.wav", audio.beat_track(1.0, 2.0))
    music = timeline.plan_walk(resolve(WalkSettings(**base, audio=str(wav))))
    assert music.frames == 30 and music.keyframe_frames == [0, 14, 29] and not music.fixed
    assert len(music.target) == 29 and min(music.target) == pytest.approx(timeline.TARGET_FLOOR)
    legacy = timeline.plan_walk(resolve(WalkSettings(**base, frames=5)))
    assert legacy.frames == 9 and legacy.keyframe_frames == [0, 4, 8]


def test_audio_settings_that_cannot_work_are_one_line(tmp_path):
    wav = audio.write_wav(tmp_path / "beats.wav", audio.beat_track(1.0, 2.0))
    base = dict(pipeline="p", out="o", prompts=["a", "b"], fps=10.0)
    cases = [
        (dict(audio=str(tmp_path / "missing.mp3")), "audio file not found"),
        (dict(times=[0, 2, 1], prompts=["a", "b", "c"]), "keyframe times must increase"),
        (dict(times=[1, 2]), "must start at 0"),
        (dict(times=[0, 2]), None),  # fine
        (dict(times=[0, 2], loop=True), "takes 3 times"),
        (dict(audio=str(wav), audio_start=5.0), "past the end"),
        (dict(audio=str(wav), audio_end=1.0, audio_start=2.0), "must come after"),
        (dict(audio=str(wav), times=[0, 5]), "the timeline lasts 5.1 s, longer than the 3.00 s of audio"),
        (dict(on_beats=True), "--on-beats needs --audio"),
        (dict(motion="audio"), "needs --audio"),
        (dict(audio=str(wav), prompts=["a", "b", "c", "d"], on_beats=True, audio_end=1.6),
         "no onsets|same onset"),
    ]
    for extra, message in cases:
        settings = WalkSettings(**{**base, **extra})
        if message is None:
            timeline.plan_walk(resolve(settings))
            continue
        with pytest.raises(LdmError, match=message) as err:
            timeline.plan_walk(resolve(settings))
        assert "\n" not in str(err.value)
