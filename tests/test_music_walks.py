"""Walks to music on the tiny pipeline: motion that follows the audio, the audio in the MP4, keyframes
on beats and on a timeline, per-keyframe guidance, resume after kill -9, and bad input."""

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ldm.apps.animate import audio, video
from ldm.apps.animate.layout import MOTION_PLOT, MP4_NAME, TIMELINE_FILE
from ldm.apps.animate.render import animate
from ldm.apps.animate.settings import WalkSettings
from ldm.cli import main
from ldm.core.errors import LdmError
from ldm.core.images import unit_to_uint8

PROMPTS = ["a red circle", "a blue square"]
FPS = 10.0
FAST = dict(steps=2, batch_size=4, fps=FPS)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def beats(tmp_path_factory) -> Path:
    """The issue's track: two seconds of silence, then two seconds of beats at 120 bpm."""
    track = audio.beat_track(silence=2.0, beats=2.0, bpm=120)
    return audio.write_wav(tmp_path_factory.mktemp("audio") / "beats.wav", track)


@pytest.fixture(scope="module")
def music_walk(kl_pipeline_path, beats, tmp_path_factory):
    """A two-prompt walk to `beats` with the defaults (motion follows the audio), rendered once."""
    out = tmp_path_factory.mktemp("music") / "walk"
    settings = WalkSettings(pipeline=str(kl_pipeline_path), out=str(out), prompts=PROMPTS, seeds=[1, 2],
                            audio=str(beats), **FAST)
    return settings, animate(settings)


def keyframe_indices(folder: Path, count: int) -> list[int]:
    """The frames that are keyframes, read from their PNG metadata (a whole-number position)."""
    from PIL import Image

    positions = [float(Image.open(video.frame_path(folder, i)).text["position"]) for i in range(count)]
    return [i for i, position in enumerate(positions) if position.is_integer()]


def test_motion_follows_the_audio(music_walk):
    _, result = music_walk
    distances = np.array(result.report["distances"])
    half = len(distances) // 2
    assert distances[half:].mean() >= 2 * distances[:half].mean()  # the beats move, the silence hardly
    followed = result.report["audio"]
    assert followed["correlation"] >= 0.8
    assert followed["correlation"] > followed["linear_correlation"] + 0.3  # the re-spacing did it
    assert (result.out / MOTION_PLOT).is_file()


def test_walk_lasts_as_long_as_the_audio_and_the_mp4_carries_it(music_walk, beats):
    _, result = music_walk
    assert result.frames == round(FPS * 4.0) == len(result.report["distances"]) + 1
    plan = json.loads((result.out / TIMELINE_FILE).read_text())
    assert plan["keyframe_frames"] == [0, result.frames - 1] and len(plan["target"]) == result.frames - 1
    assert video.video_info(result.mp4) == {"frames": result.frames, "fps": FPS}
    sound = audio.read_audio(result.mp4)  # the MP4's audio stream, decoded back
    assert abs(len(sound) / audio.ANALYSIS_RATE - result.frames / FPS) <= 1 / FPS
    # and it is the track: its beats are where they were
    onsets = audio.onset_times(audio.onset_strength(sound))
    np.testing.assert_allclose(onsets, [2.0, 2.5, 3.0, 3.5], atol=0.03)


def test_kill_9_mid_render_then_rerun_gives_identical_frames_and_mp4(music_walk, tmp_path):
    settings, full = music_walk
    out = tmp_path / "killed"
    request = json.dumps({**settings.__dict__, "out": str(out)})
    # SIGKILL from inside the render, at its 14th batch: the 4th of the re-spaced pass.
    killer = ("import json, os, signal, sys\n"
              "from ldm.apps.animate import renderers\n"
              "from ldm.apps.animate.render import animate\n"
              "from ldm.apps.animate.settings import WalkSettings\n"
              "real, calls = renderers.DiffusionWalk.render, []\n"
              "def render(self, times):\n"
              "    calls.append(1)\n"
              "    if len(calls) == 14:\n"
              "        os.kill(os.getpid(), signal.SIGKILL)\n"
              "    return real(self, times)\n"
              "renderers.DiffusionWalk.render = render\n"
              "animate(WalkSettings(**json.loads(sys.argv[1])))\n")
    done = subprocess.run([sys.executable, "-c", killer, request], cwd=REPO, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    on_disk = video.existing_frames(out / "frames")
    assert 0 < len(on_disk) < full.frames and not (out / MP4_NAME).exists()

    result = animate(WalkSettings(**{**settings.__dict__, "out": str(out)}))
    assert result.rendered == full.frames - len(on_disk)
    for i in range(full.frames):
        frame = video.frame_path(out / "frames", i)
        assert frame.read_bytes() == video.frame_path(full.out / "frames", i).read_bytes()
    assert result.mp4.read_bytes() == full.mp4.read_bytes()
    assert result.gif.read_bytes() == full.gif.read_bytes()


def test_resume_with_other_audio_settings_is_refused(music_walk, beats, tmp_path):
    settings, full = music_walk
    out = tmp_path / "copy"
    shutil.copytree(full.out, out)
    with pytest.raises(LdmError, match="audio_smooth differ"):
        animate(WalkSettings(**{**settings.__dict__, "out": str(out), "audio_smooth": 0.3}))
    other = audio.write_wav(tmp_path / "beats.wav", audio.beat_track(2.0, 2.0, bpm=100))
    with pytest.raises(LdmError, match="audio differ"):
        animate(WalkSettings(**{**settings.__dict__, "out": str(out), "audio": str(other)}))


def test_on_beats_puts_timeline_keyframes_on_the_clicks(kl_pipeline_path, tmp_path, capsys):
    clicks = audio.write_wav(tmp_path / "clicks.wav", audio.beat_track(0.0, 3.0, bpm=120))  # 0, 0.5 ... 2.5 s
    walk = tmp_path / "walk.yaml"
    walk.write_text("- {time: 0, prompt: a red circle, seed: 1}\n"
                    "- {time: 0.8, prompt: a blue square, seed: 2}\n"
                    "- {time: 1.6, prompt: a red square, seed: 3}\n"
                    "- {time: 2.9, prompt: a blue circle, seed: 4}\n")
    fps = 12
    main(["animate", str(kl_pipeline_path), "--out", str(tmp_path / "w"), "--timeline", str(walk), "--audio",
          str(clicks), "--on-beats", "--linear", "--fps", str(fps), "--steps", "1", "--batch-size", "8"])
    assert "against the audio target: correlation" in capsys.readouterr().out
    count = round(2.9 * fps) + 1
    assert video.existing_frames(tmp_path / "w" / "frames") == set(range(count))
    keyframes = keyframe_indices(tmp_path / "w" / "frames", count)
    assert keyframes[0] == 0 and keyframes[-1] == count - 1 and len(keyframes) == 4
    for frame, click in zip(keyframes[1:-1], (1.0, 1.5)):  # 0.8 s and 1.6 s snapped to the nearest click
        assert abs(frame / fps - click) <= 1 / fps


def test_times_set_the_frame_count_and_keyframe_frames(kl_pipeline_path, tmp_path):
    result = animate(WalkSettings(pipeline=str(kl_pipeline_path), out=str(tmp_path / "t"),
                                  prompts=PROMPTS + ["a green triangle"], times=[0, 1, 3], fps=6.0, steps=2))
    assert result.frames == 3 * 6 + 1 and result.report["motion"] == "even"
    assert keyframe_indices(result.out / "frames", result.frames) == [0, 6, 18]
    times = json.loads((result.out / "frames" / "times.json").read_text())
    assert times[:7] != pytest.approx(np.linspace(0, 1, 7))  # re-spaced within the segment
    with pytest.raises(LdmError, match="cannot read audio"):  # a walk without audio has a silent MP4
        audio.read_audio(result.mp4)


def test_keyframes_can_have_their_own_guidance(kl_pipeline_path, tmp_path):
    from PIL import Image

    from ldm.sampling.samplers import DETERMINISTIC_SAMPLER
    from ldm.sampling.text_to_image import sampling_pipeline

    result = animate(WalkSettings(pipeline=str(kl_pipeline_path), out=str(tmp_path / "g"), prompts=PROMPTS,
                                  seeds=[1, 2], guidances=[2.0, 6.0], frames=3, motion="linear", **FAST))
    middle = Image.open(video.frame_path(result.out / "frames", 1)).text
    assert middle["guidance"] == "4"
    pipe = sampling_pipeline(kl_pipeline_path, DETERMINISTIC_SAMPLER)  # the walks' sampler
    image = pipe([PROMPTS[1]], num_inference_steps=FAST["steps"], guidance_scale=6.0,
                 generator=[torch.Generator().manual_seed(2)], output_type="np").images
    last = video.read_frames(result.out / "frames", 3)[-1].astype(int)
    assert np.abs(unit_to_uint8(image)[0].astype(int) - last).max() <= 1


def test_bad_audio_input_is_one_line_from_the_command_line(kl_pipeline_path, beats, tmp_path, capsys):
    both = tmp_path / "both.yaml"
    both.write_text("- {time: 0, prompt: a red circle, image: a.png}\n- {time: 1, prompt: a blue square}\n")
    good = tmp_path / "good.yaml"
    good.write_text("- {time: 0, prompt: a red circle}\n- {time: 1, prompt: a blue square}\n")
    cases = [
        (["--prompts", *PROMPTS, "--audio", str(tmp_path / "song.mp3")], "audio file not found"),
        (["--prompts", *PROMPTS, "a red square", "--times", "0", "2", "1"], "keyframe times must increase"),
        (["--timeline", str(both)], "has both a prompt and an image"),
        (["--prompts", *PROMPTS, "--audio", str(beats), "--audio-start", "9"], "past the end"),
        (["--prompts", *PROMPTS, "--audio", str(beats), "--frames", "8"], "--frames is for walks without"),
        (["--timeline", str(good), "--prompts", "x"], "drop --prompts"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["animate", str(kl_pipeline_path), "--out", str(tmp_path / "never"), *args])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err, (args, err)
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()


def test_evaluate_walk_measures_unevenness_against_the_audio(music_walk, beats):
    from ldm.apps.evaluate import evaluate_walk

    _, result = music_walk
    evaluation = evaluate_walk(result.out)
    assert evaluation.value("walk_audio_correlation") == pytest.approx(result.report["audio"]["correlation"])
    assert evaluation.value("walk_cv") == pytest.approx(result.report["audio"]["cv"])
    assert evaluation.value("walk_distance_cv") == pytest.approx(result.report["walk"]["cv"])
    assert evaluation.settings["audio"] == str(beats.resolve())
