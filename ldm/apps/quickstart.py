"""`ldm quickstart [OUT]`: the whole pipeline on synthetic shapes, on a CPU, ending in a report.

    step         what                                              output (in OUT)
    data         the shapes dataset (`ldm data shapes`)            data/
    autoencoder  configs/autoencoder/kl_f4_shapes.yaml             vae/
    clip         configs/clip/clip_shapes.yaml                     text_encoder/, tokenizer/, clip/
    diffusion    configs/diffusion/ldm_shapes.yaml                 pipeline/
    samples      images for the held-out prompts (`ldm generate`)  samples/grid.png
    walk         a looping walk to a beat track (`ldm animate`)    beats.wav, walk/ (GIF, MP4, motion.png)
    evaluate     `ldm evaluate` of the three                       evaluation.json
    report       everything above on one page                      report.html

The stages train with the project's own configs, only `run_dir` and the data (and the paths of the
earlier stages' exports) pointing into OUT; the `tiny` scale also cuts every step count to a few,
for tests. Each step leaves a record, OUT/done/<step>.json, holding a fingerprint of what the step
was made from: its settings or resolved stage config, and the fingerprints of the steps it reads.
A rerun skips every step whose record matches and whose outputs are there; a changed config
reruns its stage and everything after it. A training stage that was interrupted resumes from its
last checkpoint when its config is unchanged, and starts over when it changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ldm.apps.animate import audio
from ldm.apps.animate.layout import GIF_NAME, MOTION_PLOT
from ldm.apps.animate.render import animate
from ldm.apps.animate.settings import WalkSettings
from ldm.apps.evaluate import evaluate_autoencoder, evaluate_diffusion, evaluate_walk
from ldm.apps.evaluate.generated import generate_samples, held_out_requests
from ldm.apps.generate import GRID_NAME
from ldm.apps.report import ReportContent, find_loss_curves, write_report
from ldm.core.atomic import atomic_write_bytes, read_json_mapping
from ldm.core.config import packaged_configs
from ldm.core.errors import LdmError
from ldm.core.layout import (
    CLIP,
    MODEL_CONFIG,
    MODEL_INDEX,
    PIPELINE,
    SAMPLES,
    STAGE_CONFIG,
    TEXT_ENCODER,
    TOKENIZER,
    VAE,
)
from ldm.data.shapes.generator import make_shapes_dataset
from ldm.metrics.results import format_table, format_value, read_json, write_json
from ldm.stages.registry import load_config, train_stage
from ldm.stages.run_config import LAST, comparable_config

STAGE_CONFIGS = {
    "autoencoder": "autoencoder/kl_f4_shapes.yaml",
    "clip": "clip/clip_shapes.yaml",
    "diffusion": "diffusion/ldm_shapes.yaml",
}
# What OUT holds besides the RUN folder's exports (ldm.core.layout):
DONE_DIR = "done"
DATA_DIR = "data"
WALK_DIR = "walk"
RECONSTRUCTIONS = "reconstructions.png"
EVALUATION = "evaluation.json"
REPORT = "report.html"
TRAIN_LOG = "train.log"  # in RUN/<stage>: the output of a stage trained side by side
# figures shown first, in this order
HEADLINE = (
    "prompt_fidelity", "fid", "fid_clip", "psnr", "reconstruction_fidelity", "walk_cv", "walk_audio_correlation")
IMAGE_SIZE = 32
DATA_SEED = 0
SAMPLE_SEED = 0
GUIDANCE = 4.0
# A loop through three prompts of combinations that training saw.
WALK_PROMPTS = ["a red circle in the top left", "a yellow square in the bottom right",
                "a blue triangle in the top right"]
WALK_FPS = 8.0
WALK_BPM = 120.0
WALK_AUDIO = "beats.wav"  # in OUT: the synthetic track the walk moves to


@dataclass(frozen=True)
class Scale:
    images: int  # training images of the shapes data
    test_images: int | None  # held-out images (None: the shapes default, max(64, images / 5))
    overrides: dict[str, tuple[str, ...]]  # stage -> extra config overrides
    images_per_prompt: int
    sampling_steps: int
    walk_audio: tuple[float, float]  # seconds of silence, then of beats: the walk's synthetic track


# Two steps of each stage, no warmup (a warmup must be shorter than the run)
TINY_RUN = ("train.max_steps=2", "train.warmup_steps=0", "data.batch_size=16", "train.log_every_n_steps=1")

SCALES = {
    # Time budgets, not step counts: each stage plans its steps to its minutes (train.max_minutes,
    # ldm/stages/time_budget.py) and its learning-rate schedule ends with them, so the quickstart
    # takes the same time on a slow CPU and a fast one, and a faster machine only trains more steps.
    # The autoencoder and the CLIP train side by side, a core each; the diffusion stage then has
    # both cores. Sized so that README command 1, install included, takes about 11 minutes on a
    # quiet 2-core CPU (docs/benchmarks.md has each step's time measured). Stage 2 has the most:
    # on one stage 1, 4.5 minutes (2446 steps) scored 76.6% held-out fidelity and 5.5 (2741) 84.4%
    # (session 14), but with 5.5 one README command 1 took 12 min 0 s on a slow moment of the
    # machine: 5 leaves a minute's margin under 12.
    "toy": Scale(images=10000, test_images=None,
                 overrides={"autoencoder": ("train.max_minutes=4",),
                            "clip": ("train.max_minutes=4",),
                            "diffusion": ("train.max_minutes=5",)},
                 images_per_prompt=16, sampling_steps=20, walk_audio=(1.0, 3.0)),
    # Seconds per stage, for tests: every number as small as the code accepts.
    "tiny": Scale(images=48, test_images=16,
                  overrides={"autoencoder": (*TINY_RUN, "latent_scale.samples=16"),
                             "clip": TINY_RUN,
                             "diffusion": (*TINY_RUN, "samples.prompts=[]")},
                  images_per_prompt=1, sampling_steps=2, walk_audio=(0.5, 0.5)),
}


@dataclass(frozen=True)
class Pending:
    """A step that `begin` found to run, for `finish` to record."""

    name: str
    number: int
    fingerprint: str
    output: str


@dataclass
class StepResult:
    name: str
    status: str  # "done" (ran now) or "skipped"
    seconds: float
    output: str


@dataclass
class Quickstart:
    out: Path
    scale: Scale
    results: list[StepResult] = field(default_factory=list)
    fingerprints: dict[str, str] = field(default_factory=dict)

    # ---- bookkeeping ---------------------------------------------------------------------------

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def step(self, name: str, settings, reads: list[str], outputs: list[Path], what: str,
             work: Callable[[], None]) -> bool:
        """Run `work` unless OUT/done/<name>.json records the same fingerprint; True if it ran."""
        pending = self.begin(name, settings, reads, outputs, what)
        if pending is None:
            return False
        start = time.perf_counter()
        work()
        self.finish(pending, time.perf_counter() - start)
        return True

    def begin(self, name: str, settings, reads: list[str], outputs: list[Path], what: str) -> Pending | None:
        """The step to run, announced; None (and a line saying so) when its record says it is done."""
        number = len(self.results) + 1
        fingerprint = _fingerprint([name, settings, [self.fingerprints[r] for r in reads]])
        self.fingerprints[name] = fingerprint
        output = ", ".join(str(p) for p in outputs)
        done = read_json_mapping(self.path(DONE_DIR, f"{name}.json"))  # {}: none, or unreadable
        if done.get("fingerprint") == fingerprint and all(p.exists() for p in outputs):
            print(f"[{number}] {name}: already done, skipped ({output})")
            took = f", took {_duration(done['seconds'])}" if "seconds" in done else ""
            self.results.append(StepResult(name, f"done earlier{took}; skipped", 0.0, output))
            return None
        print(f"[{number}] {name}: {what}")
        pending = Pending(name, number, fingerprint, output)
        self.results.append(StepResult(name, "running", 0.0, output))
        return pending

    def finish(self, pending: Pending, seconds: float) -> None:
        """Record a step that ran: OUT/done/<name>.json with its fingerprint and time."""
        record = self.path(DONE_DIR, f"{pending.name}.json")
        record.parent.mkdir(parents=True, exist_ok=True)
        # whole or not at all: a half-written record would be read as "not done" and rerun the step
        atomic_write_bytes(record, (json.dumps({"fingerprint": pending.fingerprint,
                                                "seconds": round(seconds, 1)}) + "\n").encode())
        print(f"[{pending.number}] {pending.name}: done in {_duration(seconds)} -> {pending.output}")
        self.results[pending.number - 1] = StepResult(pending.name, f"ran in {_duration(seconds)}", seconds,
                                                      pending.output)

    # ---- the steps -----------------------------------------------------------------------------

    def data(self) -> None:
        s = self.scale
        folder = self.path(DATA_DIR)

        def work():
            shutil.rmtree(folder, ignore_errors=True)  # a smaller dataset must not keep extra files
            make_shapes_dataset(folder, n=s.images, size=IMAGE_SIZE, seed=DATA_SEED, n_test=s.test_images)

        settings = {"n": s.images, "n_test": s.test_images, "size": IMAGE_SIZE, "seed": DATA_SEED}
        self.step("data", settings, [], [folder / "train" / "metadata.jsonl", folder / "test" / "metadata.jsonl"],
                  f"writing {s.images} training images of coloured shapes and the held-out combinations", work)

    def stage_config(self, name: str):
        """(config path, resolved config, its fingerprinted settings) of a training stage."""
        config_path = packaged_configs() / STAGE_CONFIGS[name]
        cfg = load_config(config_path, self.stage_overrides(name))
        return config_path, cfg, comparable_config(cfg)

    def stage(self, name: str, reads: list[str], outputs: list[str], what: str) -> None:
        """A training stage in this process, on every core."""
        config_path, cfg, settings = self.stage_config(name)

        def work():
            _prepare_stage_dir(cfg, settings)
            train_stage(cfg)

        self.step(name, settings, reads, [self.path(o) for o in outputs],
                  f"{what} with {config_path} (logs in {cfg.stage_dir})", work)

    def stages_side_by_side(self, lanes: list[list[tuple[str, list[str], list[str], str]]]) -> None:
        """Lanes of training stages, trained at once: the stages of a lane one after the other (a
        later one may read an earlier one), each in its own `ldm train` process with the lane's share
        of the cores. A small model's step gains little from a second thread (the shapes
        autoencoder's: 1.2x on a 2-core CPU, docs/benchmarks.md), so two lanes side by side, a core
        each, take about the time of one: their budgets overlap instead of adding up. Each stage
        writes its output to RUN/<stage>/train.log; its plan lines are printed when it ends."""
        queues = [self._pending_runs(lane) for lane in lanes]
        queues = [queue for queue in queues if queue]
        threads = max(1, (os.cpu_count() or 1) // max(1, len(queues)))
        running = {lane: self._start(queue.pop(0), threads) for lane, queue in enumerate(queues)}
        failed = []
        try:
            while running:
                time.sleep(0.2)
                for lane, (pending, log, start, process) in list(running.items()):
                    if process.poll() is None:
                        continue
                    del running[lane]
                    if process.returncode != 0:  # the lane's later stages read this one: they wait
                        failed.append(f"{pending.name} (log: {log}: {_last_line(log)})")
                        continue
                    _print_plan_lines(log)
                    self.finish(pending, time.perf_counter() - start)
                    if queues[lane]:
                        running[lane] = self._start(queues[lane].pop(0), threads)
        except KeyboardInterrupt:  # the children (same process group) save their checkpoints and stop
            for _, _, _, process in running.values():
                process.wait()
            raise
        if failed:
            raise LdmError("training failed: " + "; ".join(failed))

    def _pending_runs(self, lane: list[tuple[str, list[str], list[str], str]]) -> list[tuple]:
        """The stages of a lane that are not done yet, announced, with what starting each needs."""
        runs = []
        for name, reads, outputs, what in lane:
            config_path, cfg, settings = self.stage_config(name)
            log = cfg.stage_dir / TRAIN_LOG
            pending = self.begin(name, settings, reads, [self.path(o) for o in outputs],
                                 f"{what} with {config_path} (side by side; log: {log})")
            if pending is not None:
                runs.append((pending, config_path, cfg, settings, log))
        return runs

    def _start(self, run: tuple, threads: int) -> tuple:
        pending, config_path, cfg, settings, log = run
        _prepare_stage_dir(cfg, settings)
        process = _train_in_process(config_path, self.stage_overrides(pending.name), cfg, log, threads)
        return pending, log, time.perf_counter(), process

    def stage_overrides(self, name: str) -> list[str]:
        out = self.out.resolve()
        common = [f"run_dir={out}", f"data.source={out / DATA_DIR}"]
        if name == "diffusion":
            common += [f"vae={out / VAE}", f"text_encoder={out}"]
        return common + list(self.scale.overrides.get(name, ()))

    def samples(self) -> None:
        prompts, _ = held_out_requests()
        folder = self.path(SAMPLES)
        s = self.scale
        settings = {"n": s.images_per_prompt, "steps": s.sampling_steps, "guidance": GUIDANCE, "seed": SAMPLE_SEED}

        def work():
            shutil.rmtree(folder, ignore_errors=True)
            generate_samples(str(self.path(PIPELINE)), prompts, folder, s.images_per_prompt, SAMPLE_SEED,
                             s.sampling_steps, GUIDANCE)

        self.step("samples", settings, ["diffusion"], [folder / GRID_NAME],
                  f"generating {s.images_per_prompt} images for each of the {len(prompts)} held-out prompts", work)

    def walk(self) -> None:
        """A looping walk to the project's own beat track: it moves little in the silence, on the
        beats after it, and walk.mp4 carries the track (the defaults: audio-driven motion)."""
        folder, track = self.path(WALK_DIR), self.path(WALK_AUDIO)
        s = self.scale
        silence, beats = s.walk_audio
        walk = WalkSettings(pipeline=str(self.path(PIPELINE)), out=str(folder), kind="prompt",
                            prompts=WALK_PROMPTS, loop=True, steps=s.sampling_steps, guidance=GUIDANCE,
                            fps=WALK_FPS, video_scale=4, audio=str(track))

        def work():
            shutil.rmtree(folder, ignore_errors=True)  # frames of an older pipeline must not be reused
            audio.write_wav(track, audio.beat_track(silence, beats, WALK_BPM))
            animate(walk)

        settings = {"prompts": WALK_PROMPTS, "audio": [silence, beats, WALK_BPM], "fps": WALK_FPS,
                    "steps": s.sampling_steps}
        self.step("walk", settings, ["diffusion"], [folder / GIF_NAME, folder / MOTION_PLOT],
                  f"rendering a looping walk through three prompts to {silence:g} s of silence and "
                  f"{beats:g} s of beats at {WALK_BPM:g} bpm", work)

    def evaluate(self) -> list:
        path = self.path(EVALUATION)
        s = self.scale

        def work():
            results = [
                evaluate_autoencoder(str(self.path(VAE)), str(self.path(DATA_DIR)),
                                     grid=self.path(RECONSTRUCTIONS)),
                evaluate_diffusion(str(self.path(PIPELINE)), str(self.path(DATA_DIR)),
                                   clip=str(self.path(CLIP)), n=s.images_per_prompt,
                                   seed=SAMPLE_SEED, steps=s.sampling_steps, guidance=GUIDANCE,
                                   samples=self.path(SAMPLES), generate=False),
                evaluate_walk(self.path(WALK_DIR)),
            ]
            write_json(results, path)

        self.step("evaluate", {}, ["autoencoder", "diffusion", "samples", "walk"],
                  [path, self.path(RECONSTRUCTIONS)],
                  "measuring reconstructions, prompt fidelity, CLIP score, FID/KID and walk smoothness", work)
        results = read_json(path)
        print(format_table(results))
        return results

    def report(self, evaluations: list) -> Path:
        figures = {m.key: (e.kind, m.name, format_value(m)) for e in evaluations for m in e.metrics}
        content = ReportContent(
            title="ldm quickstart",
            intro=(f"Synthetic shapes ({self.scale.images} training images, {IMAGE_SIZE} px): a KL f=4 "
                   "autoencoder, a small CLIP and a text-conditioned latent diffusion UNet, trained on "
                   "this machine's CPU, then asked for colour, shape and position combinations that "
                   "training never showed."),
            headline=[figures[key] for key in HEADLINE if key in figures],
            samples=self.path(SAMPLES, GRID_NAME),
            samples_caption="held-out prompts: colour, shape and position combinations never shown in "
                            f"training; {self.scale.images_per_prompt} seeds each",
            reconstructions=self.path(RECONSTRUCTIONS),
            animation=self.path(WALK_DIR, GIF_NAME),
            animation_caption="a looping walk: " + " -> ".join(WALK_PROMPTS) + " (silent here; walk/walk.mp4 "
                              "carries the beat track it moves to)",
            motion_plot=self.path(WALK_DIR, MOTION_PLOT),
            loss_curves=find_loss_curves(self.out),
            evaluations=evaluations,
            steps=[(r.name, r.status, r.output) for r in self.results])
        return write_report(content, self.path(REPORT))


# ---- helpers -------------------------------------------------------------------------------------

def _fingerprint(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _prepare_stage_dir(cfg, settings: dict) -> None:
    """Resume an interrupted run of the same config; clear the checkpoints of another config."""
    if not (cfg.checkpoint_dir / f"{LAST}.ckpt").exists():
        return
    saved = cfg.stage_dir / STAGE_CONFIG
    if saved.is_file() and comparable_config(yaml.safe_load(saved.read_text())) == settings:
        print(f"  resuming the interrupted run in {cfg.stage_dir}")
        cfg.train.ckpt_path = LAST
    else:
        print(f"  the config changed since {cfg.stage_dir} was trained: starting over")
        shutil.rmtree(cfg.checkpoint_dir)


def _train_in_process(config_path: Path, overrides: list[str], cfg, log: Path, threads: int):
    """`ldm train CONFIG OVERRIDES` as a child process on `threads` threads, writing to `log`."""
    command = [sys.executable, "-m", "ldm", "train", str(config_path), *overrides]
    if cfg.train.ckpt_path == LAST:  # _prepare_stage_dir found an interrupted run of this config
        command.append("--resume")
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}  # torch's thread count, read at start
    with open(log, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.is_file() else []
    return lines[-1].strip() if lines else "no output"


def _print_plan_lines(log: Path) -> None:
    """What a stage trained side by side said about its time budget and batch, from its log."""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("[") and ("time budget" in line or "per process" in line):
            print(f"  {line}")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"


def quickstart(out: str | Path = "quickstart", scale: str = "toy") -> Path:
    """Run every step not yet done; returns the report's path."""
    if scale not in SCALES:
        raise LdmError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    run = Quickstart(Path(out), SCALES[scale])
    start = time.perf_counter()
    run.data()
    run.stages_side_by_side([
        [("autoencoder", ["data"], [f"{VAE}/{MODEL_CONFIG}"], "training the KL f=4 autoencoder")],
        [("clip", ["data"], [f"{CLIP}/{MODEL_CONFIG}", f"{TEXT_ENCODER}/{MODEL_CONFIG}", TOKENIZER],
          "training a small CLIP and its tokenizer on the captions")]])
    run.stage("diffusion", ["data", "autoencoder", "clip"], [f"{PIPELINE}/{MODEL_INDEX}"],
              "training the text-conditioned latent diffusion UNet")
    run.samples()
    run.walk()
    evaluations = run.evaluate()
    report = run.report(evaluations)
    print(f"[{len(run.results) + 1}] report: {report} (open it in a browser); "
          f"quickstart took {_duration(time.perf_counter() - start)}")
    return report
