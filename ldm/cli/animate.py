"""`ldm animate PIPELINE --out DIR ...`: latent walks as numbered PNGs, a GIF and an MP4.

    ldm animate RUN/pipeline --prompts "a red circle" "a blue square" --seeds 1 2 --out walks/demo
    ldm animate RUN/pipeline --seed-walk --prompt "a red circle" --seeds 1 2 3 --loop --out walks/seeds
    ldm animate RUN/pipeline --images a.png b.png --captions "a red circle" "a blue square" --out walks/mine
    ldm animate RUN/pipeline --autoencoder --images a.png b.png --out walks/ae
"""

from __future__ import annotations

import argparse

from ldm.cli.lora_args import add_lora_arguments, lora_choices_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", help="RUN/pipeline folder (an --autoencoder walk also takes RUN/vae)")
    parser.add_argument("--out", required=True,
                        help="folder for frames/, walk.gif, walk.mp4 and smoothness.json; rerunning "
                             "the same command there resumes an interrupted render")

    kinds = parser.add_argument_group("what to walk through (a prompt walk unless told otherwise)")
    kinds.add_argument("--prompts", nargs="+", default=[], metavar="PROMPT",
                       help="prompt walk: one keyframe per prompt")
    kinds.add_argument("--seeds", nargs="+", type=int, default=[], metavar="SEED",
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

    frames = parser.add_argument_group("frames and video")
    frames.add_argument("--frames", type=int, default=16,
                        help="frames per segment, both keyframes included (default 16; with --even-motion "
                             "the same total, shared out by each segment's length)")
    frames.add_argument("--fps", type=float, default=12.0, help="frames per second of the videos (default 12)")
    frames.add_argument("--loop", action="store_true",
                        help="walk back from the last keyframe to the first, so the video repeats seamlessly")
    frames.add_argument("--even-motion", action="store_true",
                        help="re-space frames so consecutive frames differ by about the same amount "
                             "(renders probe passes first; the report compares with linear spacing)")
    frames.add_argument("--even-passes", type=int, default=1,
                        help="re-spacing passes after the linear probe; each renders the walk once "
                             "more (default 1; 2 evens out a little further)")
    frames.add_argument("--distance-model", metavar="CLIP_FOLDER",
                        help="measure motion (even motion and the report) as the distance between CLIP "
                             "image features of this CLIP folder, e.g. RUN/clip (default: a multi-scale "
                             "pixel distance that needs no model)")
    frames.add_argument("--batch-size", type=int, default=4, help="frames per UNet batch (default 4)")
    frames.add_argument("--video-scale", type=int, default=1,
                        help="enlarge the GIF and MP4 by this factor, nearest-neighbour (default 1)")

    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--steps", type=int, default=20, help="sampler steps (default 20)")
    sampling.add_argument("--guidance", type=float, default=None,
                          help="classifier-free guidance scale (default 4, image walks 1)")
    sampling.add_argument("--sampler", default=None,
                          help="deterministic sampler: dpmsolver++ (default), ddim (image walks: ddim only), ...")
    sampling.add_argument("--negative-prompt", default="", help="negative prompt (default empty)")
    add_lora_arguments(sampling)


def walk_kind(args: argparse.Namespace) -> str:
    from ldm.core.errors import LdmError

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


def run(args: argparse.Namespace) -> None:
    from ldm.apps.animate.render import WalkSettings, animate, format_report
    from ldm.apps.animate.video import video_info

    kind = walk_kind(args)
    settings = WalkSettings(
        pipeline=args.pipeline, out=args.out, kind=kind,
        prompts=[args.prompt] if kind == "seed" else args.prompts, seeds=args.seeds,
        images=args.images, captions=args.captions, negative_prompt=args.negative_prompt,
        frames=args.frames, loop=args.loop, even_motion=args.even_motion, even_passes=args.even_passes,
        distance_model=args.distance_model,
        steps=args.steps, guidance=args.guidance, sampler=args.sampler, fps=args.fps,
        batch_size=args.batch_size, video_scale=args.video_scale, loras=lora_choices_of(args),
    )
    result = animate(settings)
    if result.gif is None:
        return  # not the main process: it rendered its share; the main one reports
    probes = " (probe passes included)" if args.even_motion else ""
    print(f"{result.frames} frames in {result.out / 'frames'}; this run rendered {result.rendered}{probes}")
    print(f"wrote {result.gif} and {result.mp4} at {args.fps:g} fps")
    gif_fps = video_info(result.gif)["fps"]
    if abs(gif_fps - args.fps) > 1e-6:
        print(f"  (the GIF plays at {gif_fps:g} fps: GIF frame times are whole hundredths of a second)")
    print(format_report(result.report))
