"""`ldm animate PIPELINE --out DIR ...`: latent walks as numbered PNGs, a GIF and an MP4.

    ldm animate RUN/pipeline --prompts "a red circle" "a blue square" --seeds 1 2 --out walks/demo
    ldm animate RUN/pipeline --seed-walk --prompt "a red circle" --seeds 1 2 3 --loop --out walks/seeds
    ldm animate RUN/pipeline --images a.png b.png --captions "a red circle" "a blue square" --out walks/mine
    ldm animate RUN/pipeline --autoencoder --images a.png b.png --out walks/ae
    ldm animate RUN/pipeline --prompts "a red circle" "a blue square" --times 0 4.5 --out walks/timed
    ldm animate RUN/pipeline --timeline walk.yaml --audio song.mp3 --audio-start 30 --out walks/song
    ldm animate RUN/pipeline --prompts "a red circle" "a blue square" --init-image room.png --mask window.png \
        --out walks/window                  # only the mask's white part walks; the rest stays room.png
"""

from __future__ import annotations

import argparse
from argparse import SUPPRESS

from ldm.cli.lora_args import add_lora_arguments, lora_choices_of
from ldm.cli.ranges import COUNT, GUIDANCE, SECONDS, SEED, SIDE, STEPS, integer, number
from ldm.cli.settings_help import given, show_defaults_of
from ldm.cli.text_args import TEXT_OPTIONS, add_text_arguments
from ldm.core.errors import LdmError

# Options that set the WalkSettings field of their name; one not given (SUPPRESS) is left to the
# field's default (ldm/cli/settings_help.py).
SETTINGS_OPTIONS = ("interpolation", "frames", "fps", "height", "width", "loop", "even_passes", "distance_model",
                    "batch_size",
                    "video_scale", "audio", "audio_start", "audio_end", "on_beats", "audio_smooth",
                    "audio_feature", "steps", "guidance", "sampler", "negative_prompt", "vae", "init_image", "mask",
                    "feather", *TEXT_OPTIONS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    show_defaults_of(parser, "ldm.apps.animate.settings:WalkSettings")
    parser.add_argument("pipeline", help="RUN/pipeline folder (an --autoencoder walk also takes RUN/vae)")
    parser.add_argument("--out", required=True,
                        help="folder for frames/, walk.gif, walk.mp4 and smoothness.json; rerunning "
                             "the same command there resumes an interrupted render")

    kinds = parser.add_argument_group("what to walk through (a prompt walk unless told otherwise)")
    kinds.add_argument("--prompts", nargs="+", default=[], metavar="PROMPT",
                       help="prompt walk: one keyframe per prompt")
    kinds.add_argument("--seeds", nargs="+", type=SEED, default=[], metavar="SEED",
                       help="one seed per prompt (default 0, 1, 2, ...), or the keyframes of a --seed-walk")
    kinds.add_argument("--seed-walk", action="store_true",
                       help="one --prompt, its starting noise walked through --seeds")
    kinds.add_argument("--prompt", help="the prompt of a --seed-walk")
    kinds.add_argument("--images", nargs="+", default=[], metavar="IMAGE",
                       help="image walk: your own images, DDIM-inverted to noise (needs --captions)")
    kinds.add_argument("--captions", nargs="+", default=[], metavar="CAPTION",
                       help="one caption per image: the prompt its inversion and frames use")
    kinds.add_argument("--autoencoder", action="store_true",
                       help="walk --images in the autoencoder's latent space, decoded with no diffusion")
    kinds.add_argument("--timeline", metavar="YAML",
                       help="keyframes with times, instead of --prompts/--seeds/--images/--times: a YAML "
                            "list of {time, prompt | image | seed, guidance?} (an image takes a caption; a "
                            "loop's last entry may be {time} alone, when it is back at the first keyframe)")

    fixed = parser.add_argument_group("a fixed image (prompt and seed walks)")
    fixed.add_argument("--init-image", metavar="IMAGE", default=SUPPRESS,
                       help="with --mask: the image every frame keeps outside the mask")
    fixed.add_argument("--mask", metavar="MASK", default=SUPPRESS,
                       help="with --init-image: only the mask's white part walks (is painted from each frame's "
                            "prompt and noise, as ldm generate --mask paints it); the rest stays the init image")
    fixed.add_argument("--feather", type=integer(0, 256), default=SUPPRESS,
                       help="with --mask: the blur radius, in pixels, of the mask's edge (default %(default)s)")

    frames = parser.add_argument_group("frames and video")
    frames.add_argument("--times", nargs="+", type=SECONDS, default=[], metavar="SECONDS",
                        help="when the walk reaches each keyframe, from 0 (a --loop adds the time it is back "
                             "at the first); the frame count is then fps x seconds")
    frames.add_argument("--frames", type=integer(2, 100000), default=SUPPRESS,
                        help="frames per segment, both keyframes included, for walks without --times or "
                             "--audio (default %(default)s; even motion shares the same total out "
                             "by each segment's length)")
    frames.add_argument("--fps", type=number(0.0, 240.0, low_open=True), default=SUPPRESS,
                        help="frames per second of the videos (default %(default)s)")
    frames.add_argument("--height", type=SIDE, default=SUPPRESS, help="frame height in pixels (default: the model's)")
    frames.add_argument("--width", type=SIDE, default=SUPPRESS, help="frame width in pixels (default: the model's)")
    frames.add_argument("--loop", action="store_true", default=SUPPRESS,
                        help="walk back from the last keyframe to the first, so the video repeats seamlessly")
    spacing = frames.add_mutually_exclusive_group()
    spacing.add_argument("--linear", action="store_true",
                         help="space frames evenly in the interpolation, in one render pass (default: even "
                              "motion, or with --audio motion that follows it: a linear probe render, then "
                              "the walk re-spaced, about twice the render time)")
    spacing.add_argument("--even-motion", action="store_true",
                         help="frames that differ by about the same amount: the default without --audio; "
                              "with it, ignore the audio's loudness (the report compares with linear "
                              "spacing)")
    frames.add_argument("--even-passes", type=integer(1, 16), default=SUPPRESS,
                        help="re-spacing passes after the linear probe; each renders the walk once "
                             "more (default %(default)s; 2 evens out a little further)")
    frames.add_argument("--keep-jumps", action="store_true",
                        help="--interpolation dissolve: leave the model's jumps (switches between two pictures "
                             "that re-spacing cannot spread, found by bisection after the probe pass) as they "
                             "are, instead of dissolving them over the frames that fall inside")
    frames.add_argument("--distance-model", metavar="CLIP_FOLDER", default=SUPPRESS,
                        help="measure motion (even motion and the report) as the distance between CLIP "
                             "image features of this CLIP folder, e.g. RUN/clip (default: a multi-scale "
                             "pixel distance that needs no model)")
    frames.add_argument("--batch-size", type=COUNT, default=SUPPRESS,
                        help="frames per UNet batch (default %(default)s)")
    frames.add_argument("--video-scale", type=integer(1, 16), default=SUPPRESS,
                        help="enlarge the GIF and MP4 by this factor, nearest-neighbour (default %(default)s)")

    sound = parser.add_argument_group("audio (a walk to music)")
    sound.add_argument("--audio", metavar="FILE", default=SUPPRESS,
                       help="WAV, FLAC, OGG, MP3 (anything ffmpeg reads): the walk lasts as long as the "
                            "audio (or its --times), moves further per frame where the audio is louder or "
                            "busier, and walk.mp4 carries it (the GIF stays silent)")
    sound.add_argument("--audio-start", type=SECONDS, default=SUPPRESS, metavar="SECONDS",
                       help="where in the audio the walk starts (default %(default)s)")
    sound.add_argument("--audio-end", type=SECONDS, default=SUPPRESS, metavar="SECONDS",
                       help="where in the audio the walk ends (default: the end of the file, or of --times)")
    sound.add_argument("--on-beats", action="store_true", default=SUPPRESS,
                       help="move each keyframe but the first and last to the nearest onset (beat) of the "
                            "audio")
    sound.add_argument("--audio-smooth", type=SECONDS, default=SUPPRESS, metavar="SECONDS",
                       help="Gaussian smoothing of the audio target, so motion does not jitter (default "
                            "%(default)s)")
    sound.add_argument("--audio-feature", default=SUPPRESS, metavar="FEATURE",
                       help="what motion follows: onsets (onset strength, spectral flux: hits, notes) or "
                            "energy (RMS: loudness) (default %(default)s)")

    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--interpolation", default=SUPPRESS, metavar="METHOD",
                          help="how frames between keyframes are made (default %(default)s): dissolve (lerped "
                               "text, slerped noise, and the model's jumps dissolved), slerp (the same, no "
                               "dissolves), blend (latent blending: neighbouring frames share their early "
                               "steps and branch late) or attention (AID: attention interpolated between the "
                               "keyframes'); the frames at the keyframes are the keyframe images in every case")
    sampling.add_argument("--steps", type=STEPS, default=SUPPRESS, help="sampler steps (default %(default)s)")
    sampling.add_argument("--guidance", type=GUIDANCE, default=SUPPRESS,
                          help="classifier-free guidance scale (default %(DEFAULT_GUIDANCE)s, image walks "
                               "%(IMAGE_WALK_GUIDANCE)s)")
    sampling.add_argument("--sampler", default=SUPPRESS,
                          help="deterministic sampler: dpmsolver++ (default; tcd for a distilled pipeline), "
                               "ddim (image walks: %(IMAGE_WALK_SAMPLER)s only), ...")
    sampling.add_argument("--negative-prompt", default=SUPPRESS, help="negative prompt (default %(default)s)")
    add_text_arguments(sampling)
    add_lora_arguments(sampling)
    sampling.add_argument("--vae", metavar="DIR", default=SUPPRESS,
                          help="decode with this autoencoder (e.g. RUN/vae of a train.decoder_only run) instead of "
                               "the pipeline's; it must share the pipeline's latents")


def walk_kind(args: argparse.Namespace, timeline=None) -> str:
    if timeline is not None:
        return _timeline_kind(args, timeline)
    if args.autoencoder:
        if args.prompts or args.prompt or args.captions:
            raise LdmError("an --autoencoder walk takes --images only, no prompts or captions")
        return "autoencoder"
    if args.images:
        if args.prompts or args.seed_walk:
            raise LdmError("--images makes an image walk: give --captions, not --prompts or --seed-walk")
        return "image"
    if args.seed_walk:
        if not args.prompt or args.prompts:
            raise LdmError("a --seed-walk takes one --prompt (not --prompts) and its --seeds")
        return "seed"
    if args.prompt:
        raise LdmError("--prompt is for --seed-walk; a prompt walk takes --prompts")
    return "prompt"


def _timeline_kind(args: argparse.Namespace, timeline) -> str:
    """The walk kind of --timeline keyframes; LdmError when flags also give keyframes."""
    flags = (("--prompts", args.prompts), ("--seeds", args.seeds), ("--images", args.images),
             ("--captions", args.captions), ("--times", args.times), ("--seed-walk", args.seed_walk))
    also = [flag for flag, value in flags if value]
    if also:
        raise LdmError(f"--timeline lists the keyframes and their times: drop {', '.join(also)}")
    if timeline.kind == "seed":
        if not args.prompt:
            raise LdmError("a --timeline of seeds alone is a seed walk: give its --prompt")
        return "seed"
    if args.prompt:
        raise LdmError("--prompt is for a --timeline of seeds alone; this one has its own prompts or images")
    if args.autoencoder:
        if timeline.kind != "image" or timeline.captions:
            raise LdmError("an --autoencoder walk takes images only: a --timeline of {time, image}")
        return "autoencoder"
    return timeline.kind


def _keyframes(args: argparse.Namespace, kind: str, timeline) -> dict:
    """WalkSettings' keyframe fields, from the flags or from --timeline."""
    if timeline is None:
        return dict(prompts=[args.prompt] if kind == "seed" else args.prompts, seeds=args.seeds,
                    images=args.images, captions=args.captions, times=args.times)
    return dict(prompts=[args.prompt] if kind == "seed" else timeline.prompts, seeds=timeline.seeds,
                images=timeline.images, captions=timeline.captions, times=timeline.times,
                guidances=timeline.guidances if any(g is not None for g in timeline.guidances) else [])


def _motion(args: argparse.Namespace) -> str | None:
    return "linear" if args.linear else ("even" if args.even_motion else None)


def run(args: argparse.Namespace) -> None:
    from ldm.apps.animate.render import animate
    from ldm.apps.animate.settings import WalkSettings
    from ldm.apps.animate.smoothness_report import format_report
    from ldm.apps.animate.timeline import read_timeline
    from ldm.apps.animate.video import video_info

    timeline = read_timeline(args.timeline) if args.timeline else None
    kind = walk_kind(args, timeline)
    if hasattr(args, "frames") and (args.times or args.timeline or hasattr(args, "audio")):
        raise LdmError("--frames is for walks without a clock: with --times, --timeline or --audio the frame "
                       "count is fps x seconds")
    settings = WalkSettings(pipeline=args.pipeline, out=args.out, kind=kind, **_keyframes(args, kind, timeline),
                            motion=_motion(args), dissolve_jumps=not args.keep_jumps, loras=lora_choices_of(args),
                            **given(args, SETTINGS_OPTIONS))
    result = animate(settings)
    if result.gif is None:
        return  # not the main process: it rendered its share; the main one reports
    probes = "" if args.linear else " (the probe pass and jump search included)"
    print(f"{result.frames} frames in {result.out / 'frames'}; this run rendered {result.rendered}{probes}")
    print(f"wrote {result.gif} and {result.mp4} at {settings.fps:g} fps")
    gif_fps = video_info(result.gif)["fps"]
    if abs(gif_fps - settings.fps) > 1e-6:
        print(f"  (the GIF plays at {gif_fps:g} fps: GIF frame times are whole hundredths of a second)")
    print(format_report(result.report))
