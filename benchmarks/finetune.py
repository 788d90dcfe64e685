"""Teach a trained shapes model a colour it never saw, with LoRA and with full fine-tuning.

    python -m benchmarks finetune quickstart                  # the quickstart's pipeline, 3 min each
    python -m benchmarks finetune /tmp/q --minutes 0.1 --images 32 --seeds 1 --steps 2   # a dry run

From QUICKSTART/pipeline (trained on the six colours of `ldm data shapes`), it
  1. writes the pink data: `ldm data shapes OUT/pink --colours pink` (a colour and a word the base
     model never saw; the captions are the usual templates),
  2. teaches the autoencoder's decoder the new colour first: the quickstart's autoencoder never saw
     pink either and decodes it as orange (19 dB against 29 dB on its own data), and no UNet can draw
     what its decoder cannot. `train.decoder_only` on shapes in every colour, pink included
     (`configs/autoencoder/kl_f4_shapes.yaml`, --decoder-minutes), keeps the encoder and so the
     latents exactly: the base UNet stays valid, and the base pipeline with the new decoder
     (OUT/base_new_decoder) is the base of both fine-tunings,
  3. measures prompt fidelity before: on "a pink <shape> <position>" for every shape and position,
     and on the default data's held-out prompts (colour, shape and position combinations the base
     never saw in training), with the base's own decoder and with the new one,
  4. fine-tunes that pipeline on the pink data with `configs/diffusion/ldm_shapes.yaml` (its batch,
     loss and EMA; `pretrained:` the base with the new decoder), three times, each for at most --minutes
     of training (the latent cache is built before the clock starts): LoRA adapters on the UNet's
     attention (`lora:`), every UNet weight, and textual inversion (`textual_inversion:`, the word
     "pink" learned as a new token, everything else frozen); then all again on the pink images mixed with as
     many of the base's own training images (--replay; what DreamBooth's prior preservation and
     kohya's regularisation images do against forgetting),
  5. measures both prompt sets again after each, the LoRA through `ldm generate --lora`.

`--methods` picks the fine-tunings (default lora and full): the adapter kinds lora, dora, loha and
lokr (`lora.kind`, each measured through `ldm generate --lora`), full, and dreambooth (full
fine-tuning with prior preservation: --class-images of --class-prompt made by the base, mixed into
every batch; it has no replay row, its class images being its replay).

Prompt fidelity is the share of generated images whose colour and shape are the prompt's, as the
attribute checker of `ldm.data.shapes.checker` reads them (`ldm.apps.evaluate.generated.shapes_fidelity`):
on the pink prompts it says whether the new word was learnt, on the held-out prompts how much of
what the model knew survived. Prints a table and writes OUT/finetune.json.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from diffusers import DiffusionPipeline
from PIL import Image

from ldm.apps.evaluate.generated import held_out_requests, shapes_fidelity
from ldm.components.autoencoder import load_vae
from ldm.core.errors import LdmError
from ldm.core.images import contact_sheet
from ldm.core.layout import LEARNED_EMBEDS, PIPELINE, VAE
from ldm.data.shapes.generator import ALL_COLOURS, POSITIONS, SHAPES, make_shapes_dataset, plain_prompt
from ldm.sampling.lora import LoraChoice
from ldm.sampling.pipeline_io import export_pipeline
from ldm.stages.registry import load_config, train_stage

NEW_COLOUR = "pink"
CONFIG = "diffusion/ldm_shapes.yaml"
DECODER_CONFIG = "autoencoder/kl_f4_shapes.yaml"
IMAGE_SIZE = 32
DATA_SEED = 1
DECODER_DATA_SEED = 2  # another draw than the pink data's
METHODS = ("lora", "full", "ti")  # the default rows; --methods adds the others
ADAPTERS = ("lora", "dora", "loha", "lokr")  # lora.kind values
# DreamBooth: a full fine-tune with prior preservation (data.prior_preservation), class images of
# --class-prompt made by the base; "full" is DreamBooth without it.
ALL_METHODS = (*ADAPTERS, "full", "dreambooth", "ti")
# Textual inversion learns the colour's name itself as a new word ("pink", which the base's tokenizer
# spells out of pieces), started from the embedding of a colour it knows.
TI_INITIALIZER = "red"
METADATA = "metadata.jsonl"


def pink_requests() -> tuple[list[str], list[dict]]:
    """A prompt for every shape in every position, in the new colour, and what each asks for."""
    attributes = [{"colour": NEW_COLOUR, "shape": shape, "position": position}
                  for shape in SHAPES for position in POSITIONS]
    return [plain_prompt(a["colour"], a["shape"], a["position"]) for a in attributes], attributes


def measure(pipeline: Path, out: Path, args, loras: list[LoraChoice] = (), embeddings: list[Path] = ()) -> dict:
    """Prompt fidelity on the pink prompts and on the held-out prompts."""
    scores = {}
    for name, (prompts, attributes) in (("pink", pink_requests()), ("held_out", held_out_requests())):
        scores[name] = shapes_fidelity(str(pipeline), prompts, attributes, out / name, n=args.seeds,
                                       seed=0, steps=args.steps, guidance=args.guidance, loras=loras,
                                       embeddings=embeddings)
    return scores


def fine_tune_decoder(base: Path, out: Path, args) -> tuple[Path, dict]:
    """The base's autoencoder with its decoder trained on shapes in every colour; (RUN/vae, the run)."""
    data = out / "all_colours"
    if not (data / "train" / "metadata.jsonl").is_file():
        make_shapes_dataset(data, n=args.decoder_images, size=IMAGE_SIZE, seed=DECODER_DATA_SEED,
                            colours=list(ALL_COLOURS))
    return timed_run(DECODER_CONFIG, out / "decoder",
                     [f"model.pretrained={base / VAE}", "train.decoder_only=true", f"data.source={data}",
                      f"train.max_minutes={args.decoder_minutes}", f"train.lr={args.lr_decoder}",
                      "train.warmup_steps=0"])


def timed_run(config: str, run_dir: Path, overrides: list[str]) -> tuple[Path, dict]:
    """Train `config` with `overrides` in a fresh `run_dir` (each measurement starts from the base);
    (its export, what the run did)."""
    cfg = load_config(config, [f"run_dir={run_dir}", *overrides])
    shutil.rmtree(run_dir, ignore_errors=True)
    if cfg.data.prior_preservation is not None:  # the class images, made once, are not training time
        from ldm.stages.diffusion.class_images import prepare_class_images

        prepare_class_images(cfg, Path(cfg.pretrained))
    start = time.perf_counter()
    stage = train_stage(cfg)
    seconds = round(time.perf_counter() - start, 1)
    return stage.export, {"steps": stage.trainer.global_step, "seconds": seconds, "lr": cfg.train.lr,
                          "batch": cfg.data.batch_size}


def with_decoder(base: Path, vae: Path, out: Path) -> Path:
    """The base pipeline with another autoencoder (same UNet, text encoder and schedule) at `out`.
    Valid because the new decoder reads the same latents: its encoder is the base's, unchanged."""
    pipe = DiffusionPipeline.from_pretrained(base, use_safetensors=True)
    return export_pipeline(out, vae=load_vae(vae), text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                           unet=pipe.unet, scheduler=pipe.scheduler)


def replay_dataset(out: Path, sources: list[tuple[Path, int]]) -> Path:
    """An imagefolder at `out` holding copies of the first n training images of each (folder, n)
    (copies: the data loader refuses links that point outside the data folder)."""
    train = out / "train"
    if (train / METADATA).is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    train.mkdir(parents=True)
    rows = []
    for index, (folder, n) in enumerate(sources):
        lines = (folder / "train" / METADATA).read_text().splitlines()[:n]
        for line in lines:
            row = json.loads(line)
            name = f"{index}-{row['file_name']}"  # two sources may use the same file names
            shutil.copyfile(folder / "train" / row["file_name"], train / name)
            rows.append(json.dumps({**row, "file_name": name}))
    (train / METADATA).write_text("\n".join(rows) + "\n")
    return out


def fine_tune(method: str, name: str, base: Path, data: Path, out: Path, args) -> tuple[Path, dict]:
    """Train `method` (an adapter kind, full or dreambooth) as run `name` on `data`; (its export,
    what the run did). DreamBooth's class images are made before the clock starts."""
    overrides = [f"pretrained={base}", "vae=null", "text_encoder=null", "noise=null", f"data.source={data}",
                 f"train.max_minutes={args.minutes}", f"train.max_steps={args.max_steps}", "samples.prompts=[]"]
    if method in ADAPTERS:
        overrides += [f"lora.kind={method}", f"lora.rank={args.rank}", f"train.lr={args.lr_lora}"]
    elif method == "ti":  # only the new word's embedding trains; captions encoded at every step
        overrides += [f"textual_inversion={{token: {NEW_COLOUR}, initializer: {TI_INITIALIZER}}}", "cache=false",
                      f"train.lr={args.lr_ti}"]
    else:
        overrides += [f"train.lr={args.lr_full}"]
    if method == "dreambooth":
        overrides += [f"data.prior_preservation.class_prompt={args.class_prompt}",
                      f"data.prior_preservation.num_class_images={args.class_images}",
                      f"data.prior_preservation.steps={args.steps}"]
    return timed_run(CONFIG, out / name, overrides)


def method_title(method: str, args) -> str:
    if method in ADAPTERS:
        return f"{'LoRA DoRA LoHa LoKr'.split()[ADAPTERS.index(method)]} (rank {args.rank})"
    if method == "dreambooth":
        return f"DreamBooth, prior preservation ({args.class_images} x {args.class_prompt!r})"
    if method == "ti":
        return "textual inversion (the word pink)"
    return "full fine-tune"


def pink_sheet(out: Path, titles: dict[str, str]) -> Path:
    """OUT/pink_samples.png: for each model (samples folder -> title), the first seed of every pink
    prompt (each shape in each position), one row a model."""
    rows = [(title, [Image.open(path) for path in sorted((out / "samples" / folder / "pink").glob("*-seed0.png"))])
            for folder, title in titles.items()]
    path = out / "pink_samples.png"
    contact_sheet(rows).save(path)
    return path


def percent(fraction: float) -> str:
    return f"{100 * fraction:5.1f}%"


def table(results: dict) -> str:
    """One row per model: pink fidelity (colour and shape; colour alone) and held-out fidelity."""
    lines = ["| model | training | pink: colour and shape | pink: colour | held-out: colour and shape "
             "| held-out: colour |", "| --- | --- | --- | --- | --- | --- |"]
    for name, result in results.items():
        done = result.get("run")
        trained = "-"
        if done:
            trained = f"{done['steps']} steps of {done['batch']}, lr {done['lr']:g}, {done['seconds']:.0f} s"
        pink, held = result["pink"], result["held_out"]
        figures = [pink["colour_and_shape"], pink["colour"], held["colour_and_shape"], held["colour"]]
        lines.append(f"| {name} | {trained} | " + " | ".join(percent(f) for f in figures) + " |")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    parser.add_argument("quickstart", help="a quickstart folder (its pipeline/ is the base)")
    parser.add_argument("--out", help="where to write (default QUICKSTART/finetune)")
    parser.add_argument("--minutes", type=float, default=3.0, help="training time cap of each method")
    parser.add_argument("--max-steps", type=int, default=100_000, help="step cap of each method")
    parser.add_argument("--images", type=int, default=400, help="pink training images")
    parser.add_argument("--replay", type=int, default=400,
                        help="images of the base's own training data mixed with the pink ones (second pair of runs)")
    parser.add_argument("--decoder-minutes", type=float, default=1.5, help="training time cap of the decoder")
    parser.add_argument("--decoder-images", type=int, default=2000, help="images in every colour for the decoder")
    parser.add_argument("--lr-decoder", type=float, default=5e-4)
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank")
    parser.add_argument("--lr-lora", type=float, default=1e-3)
    parser.add_argument("--lr-full", type=float, default=5e-4)
    parser.add_argument("--lr-ti", type=float, default=5e-3, help="textual inversion's learning rate")
    parser.add_argument("--seeds", type=int, default=8, help="images per prompt")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=list(METHODS),
                        help="what to fine-tune with: adapter kinds (lora, dora, loha, lokr), full, and "
                             "dreambooth (full with prior preservation)")
    parser.add_argument("--class-prompt", default="a shape", help="dreambooth: the class images' prompt")
    parser.add_argument("--class-images", type=int, default=200, help="dreambooth: how many class images")


def fine_tunings(base: Path, pink: Path, out: Path, args) -> tuple[dict, dict]:
    """Each method on the pink data, then on the pink data with replayed base images:
    ({title: scores and run}, {samples folder: title})."""
    results, folders = {}, {}
    replay = replay_dataset(out / "pink_replay", [(pink, args.images), (Path(args.quickstart) / "data", args.replay)])
    for training_data, suffix in ((pink, ""), (replay, "_replay")):
        for method in args.methods:
            if suffix and method == "dreambooth":
                continue  # its class images are its replay
            name = method + suffix
            export, trained = fine_tune(method, name, base, training_data, out, args)
            samples = out / "samples" / name
            if method in ADAPTERS:
                scores = measure(base, samples, args, loras=[LoraChoice(str(export))])
            elif method == "ti":
                scores = measure(base, samples, args, embeddings=[export / LEARNED_EMBEDS])
            else:
                scores = measure(export, samples, args)
            title = method_title(method, args)
            if suffix:
                title += f", with {args.replay} base images"
            results[title] = {**scores, "run": trained}
            folders[name] = title
    return results, folders


def run(args) -> dict:
    base = Path(args.quickstart) / PIPELINE
    if not (base / "model_index.json").is_file():
        raise LdmError(f"{base} is not a pipeline: run `ldm quickstart {args.quickstart}` first")
    out = Path(args.out) if args.out else Path(args.quickstart) / "finetune"
    pink = out / "pink"
    if not (pink / "train" / METADATA).is_file():
        make_shapes_dataset(pink, n=args.images, size=IMAGE_SIZE, seed=DATA_SEED, colours=[NEW_COLOUR])

    results = {"base (before)": measure(base, out / "samples" / "base", args)}
    folders = {"base": "base (before)", "base_new_decoder": "base + new decoder"}
    vae, decoder_run = fine_tune_decoder(base, out, args)
    base = with_decoder(base, vae, out / "base_new_decoder")
    results["base + new decoder"] = {**measure(base, out / "samples" / "base_new_decoder", args),
                                     "run": decoder_run}
    tuned, tuned_folders = fine_tunings(base, pink, out, args)
    results.update(tuned)
    folders.update(tuned_folders)

    print(table(results))
    report = {"settings": vars(args), "results": results}
    (out / "finetune.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    sheet = pink_sheet(out, folders)
    print(f"wrote {out / 'finetune.json'} and {sheet}; samples in {out / 'samples'}")
    return report
