"""Inject faults into tiny runs and print, for each, whether ldm survived it, refused it clearly, or failed.

    python tests/fault_suite.py [--kills 10] [--seed 0] [--quick] [--work DIR]

survived        the run went on (or resumed) to the result an undisturbed run gives
refused clearly one line that names the problem, exit status 2, no traceback, nothing trained or written
FAILED          anything else (the table says what happened)

Faults: SIGKILL at --kills random moments of each training stage (then --resume, compared weight for
weight with an uninterrupted twin), SIGTERM, NaN losses (one step, and a run of them), a truncated
last.ckpt, a write failure during an export, a second run into a busy folder, a config changed on
resume, malformed configs and overrides, malformed images and captions, booby-trapped model folders
and a metadata.jsonl that points outside its folder. `--quick` runs only the faults that train nothing
(the configs, data and folders), in seconds; tests/test_fault_suite.py runs that part, and (marked slow)
the training faults with one kill of the diffusion stage.

Every fault here also has its own test (tests/test_faults.py, test_reproducible.py, test_trust.py,
test_config.py, test_decode.py, test_captions.py); this suite is the one table of all of them. It lives
beside the tests, which it imports from (tiny.py's pipelines).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch
from PIL import Image
from safetensors.torch import load_file
from tiny import make_tiny_pipeline

from ldm.cli import main as ldm_main
from ldm.core.errors import LdmError
from ldm.data.check import check_data
from ldm.data.config import DataConfig
from ldm.data.shapes.generator import make_shapes_dataset
from ldm.stages.diffusion import train as diffusion_stage
from ldm.stages.registry import load_config, train_stage

SURVIVED, REFUSED, FAILED = "survived", "refused clearly", "FAILED"
SIZE = 16
TINY = {
    "autoencoder": ["model.channels=[8,16,16]", "model.norm_num_groups=8", "loss.disc_channels=8",
                    "loss.disc_start=2", "latent_scale.samples=16"],
    "clip": ["model.vision.embedding_size=8", "model.vision.hidden_sizes=[8,16,16]", "model.text.hidden_size=32",
             "model.projection_dim=16", "tokenizer.vocab_size=600", "validation.zero_shot_images=16"],
    "diffusion": ["unet.block_out_channels=[16,32]", "unet.norm_num_groups=8", "samples.prompts=[]"],
}
CONFIGS = {"autoencoder": "autoencoder/kl_f4_shapes.yaml", "clip": "clip/clip_shapes.yaml",
           "diffusion": "diffusion/ldm_shapes.yaml"}
EXPORTS = {"autoencoder": "vae", "clip": "text_encoder", "diffusion": "pipeline"}


@dataclass
class Outcome:
    fault: str
    verdict: str
    detail: str


# ---- running ldm as a user does --------------------------------------------------------------------

def ldm_in_process(*args: str) -> tuple[int, str]:
    """(exit status, stderr) of `ldm ARGS` run in this process (fast: no import per call)."""
    err = io.StringIO()
    with redirect_stderr(err):
        try:
            ldm_main(list(args))
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except Exception as unexpected:  # a traceback: a bug, not a clear refusal
            return 1, f"Traceback: {type(unexpected).__name__}: {unexpected}"
    return code, err.getvalue()


def ldm_process(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count in every run: same weights
    return subprocess.Popen([sys.executable, "-m", "ldm", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def clearly_refused(code: int, stderr: str, *names: str) -> tuple[bool, str]:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("ldm ")]
    line = lines[-1] if lines else stderr.strip()[-300:]
    ok = code == 2 and "Traceback" not in stderr and bool(lines) and all(n in line for n in names)
    return ok, line


def same_weights(a: Path, b: Path) -> tuple[bool, str]:
    files = sorted(p.relative_to(a) for p in a.rglob("*.safetensors"))
    if not files:
        return False, f"no weights in {a}"
    worst = 0.0
    for file in files:
        x, y = load_file(a / file), load_file(b / file)
        for key in x:
            worst = max(worst, (x[key].float() - y[key].float()).abs().max().item())
    return worst == 0.0, f"max abs difference {worst:.3g}"


# ---- the runs the faults are injected into --------------------------------------------------------

class Runs:
    def __init__(self, work: Path):
        self.work = work
        self.data = make_shapes_dataset(work / "data", n=40, size=SIZE, seed=0, n_test=16)
        self.stage1 = work / "stage1"  # trained once, read by the diffusion runs

    def overrides(self, stage: str, run: Path, steps: int = 12) -> list[str]:
        common = [f"run_dir={run}", f"data.source={self.data}", f"data.resolution={SIZE}", "data.batch_size=8",
                  f"train.max_steps={steps}", "train.warmup_steps=0",
                  "train.val_every_n_steps=5", "train.checkpoint_every_n_steps=3",
                  "train.log_every_n_steps=1", "train.precision=32-true", "train.max_minutes=null"]
        if stage == "diffusion":
            common += [f"vae={self.stage1 / 'vae'}", f"text_encoder={self.stage1}", "data.batch_size=4"]
        if stage == "clip":
            common += ["validation.zero_shot_split=test"]
        return [*common, *TINY[stage]]

    def train(self, stage: str, run: Path, *extra: str) -> subprocess.Popen:
        return ldm_process("train", CONFIGS[stage], *self.overrides(stage, run), *extra)

    def prepare(self) -> None:
        for stage in ("autoencoder", "clip"):
            done = self.train(stage, self.stage1)
            if done.wait() != 0:
                raise SystemExit(f"could not train the {stage} that the faults build on:\n{done.stderr.read()}")


# ---- faults that train ------------------------------------------------------------------------------

def kill_and_resume(runs: Runs, stage: str, rng: random.Random, index: int, twin: Path) -> Outcome:
    name = f"SIGKILL at a random moment of the {stage} stage (#{index + 1})"
    run = runs.work / f"kill-{stage}-{index}"
    victim = runs.train(stage, run)
    checkpoints = run / ("clip_training" if stage == "clip" else stage) / "checkpoints"
    while not list(checkpoints.glob("step*.ckpt")) and victim.poll() is None:
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 2.0))
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    if victim.returncode == 0:
        return Outcome(name, SURVIVED, "finished before the kill landed (nothing to resume)")
    resumed = runs.train(stage, run, "--resume")
    if resumed.wait() != 0:
        return Outcome(name, FAILED, f"resume failed: {resumed.stderr.read()[-300:]}")
    same, detail = same_weights(twin / EXPORTS[stage], run / EXPORTS[stage])
    return Outcome(name, SURVIVED if same else FAILED, f"killed, resumed; export vs uninterrupted twin: {detail}")


def sigterm(runs: Runs, twin: Path) -> Outcome:
    name = "SIGTERM (a cluster's preemption) mid-run"
    run = runs.work / "sigterm"
    victim = runs.train("diffusion", run)
    while not (run / "diffusion" / "csv" / "metrics.csv").exists() and victim.poll() is None:
        time.sleep(0.02)
    victim.send_signal(signal.SIGTERM)
    code, stderr = victim.wait(), victim.stderr.read()
    if code != 128 + signal.SIGTERM or "stopped by SIGTERM" not in stderr:
        return Outcome(name, FAILED, f"exit {code}: {stderr[-300:]}")
    resumed = runs.train("diffusion", run, "--resume")
    if resumed.wait() != 0:
        return Outcome(name, FAILED, f"resume failed: {resumed.stderr.read()[-300:]}")
    same, detail = same_weights(twin / "pipeline", run / "pipeline")
    line = stderr.strip().splitlines()[-1]
    return Outcome(name, SURVIVED if same else FAILED, f"{line[:90]}...; resumed export vs twin: {detail}")


def nan_steps(runs: Runs) -> list[Outcome]:
    """A NaN loss at one step (skipped, the run goes on) and from a step on (the run stops, named)."""
    outcomes = []
    for name, bad, extra in (("NaN loss at one step (k=3)", lambda step: step == 3, []),
                             ("NaN loss at every step from k=3 on", lambda step: step >= 3, ["train.max_bad_steps=4"])):
        run = runs.work / f"nan-{len(outcomes)}"
        cfg = load_config(CONFIGS["diffusion"], [*runs.overrides("diffusion", run), *extra])
        with diffusion_stage.begin(cfg):
            module = diffusion_stage.build_module(cfg)
            module.diffusion_loss = poisoned(module, bad)
            try:
                trainer = diffusion_stage.fit(cfg, module, diffusion_stage.build_datamodule(cfg, module))
                finite = all(torch.isfinite(p).all() for p in module.unet.parameters())
                outcomes.append(Outcome(name, SURVIVED if finite and trainer.global_step == 12 else FAILED,
                                        f"step skipped and counted; {trainer.global_step} steps, weights finite"))
            except LdmError as err:
                finite = all(torch.isfinite(p).all() for p in module.unet.parameters())
                ok = "not finite" in str(err) and finite and not (run / "pipeline").exists()
                outcomes.append(Outcome(name, REFUSED if ok else FAILED, str(err)[:110] + "..."))
    return outcomes


def poisoned(module, bad_step):
    """`module`'s diffusion loss, NaN in training at the steps where `bad_step(global_step)` holds."""
    plain = module.diffusion_loss

    def loss(*args, **kwargs):
        value = plain(*args, **kwargs)
        return value * float("nan") if module.training and bad_step(module.global_step) else value

    return loss


def truncated_checkpoint(runs: Runs) -> Outcome:
    name = "truncated last.ckpt, then --resume"
    run = runs.work / "truncated"
    if runs.train("diffusion", run, "train.max_steps=7").wait() != 0:
        return Outcome(name, FAILED, "the first run failed")
    last = run / "diffusion" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])
    resumed = runs.train("diffusion", run, "--resume")
    code, stderr = resumed.wait(), resumed.stderr.read()
    ok = code == 0 and "resuming from" in stderr and (run / "pipeline").is_dir()
    return Outcome(name, SURVIVED if ok else FAILED, "fell back to the newest readable step checkpoint, with a "
                   "warning" if ok else stderr[-300:])


def export_write_failure(runs: Runs) -> Outcome:
    """A disk that fails while the export is written: the previous export must stay whole."""
    name = "write failure during an export"
    run = runs.work / "export-failure"
    first = train_stage(load_config(CONFIGS["autoencoder"], runs.overrides("autoencoder", run, steps=4)))
    before = {p.name: p.read_bytes() for p in first.export.iterdir()}
    shutil.rmtree(run / "autoencoder" / "checkpoints")  # a new run into the same folder

    def failing_save(self, folder, *args, **kwargs):
        (Path(folder) / "diffusion_pytorch_model.safetensors").write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    with mock.patch("diffusers.ModelMixin.save_pretrained", failing_save):
        try:
            train_stage(load_config(CONFIGS["autoencoder"], runs.overrides("autoencoder", run, steps=4)))
            return Outcome(name, FAILED, "the failing write went unnoticed")
        except OSError:
            pass
    after = {p.name: p.read_bytes() for p in first.export.iterdir()}
    leftovers = [p.name for p in run.iterdir() if p.name.startswith(".vae.")]
    ok = after == before and not leftovers
    return Outcome(name, SURVIVED if ok else FAILED, "the previous RUN/vae is byte for byte as it was, no "
                   "temporary folder left" if ok else f"changed or left {leftovers}")


def busy_folder(runs: Runs) -> Outcome:
    name = "a second ldm train into a busy folder"
    run = runs.work / "busy"
    first = runs.train("diffusion", run, "train.max_steps=200")
    while not (run / "diffusion" / "train.lock").exists() and first.poll() is None:
        time.sleep(0.02)
    code, stderr = ldm_in_process("train", CONFIGS["diffusion"], *runs.overrides("diffusion", run))
    first.kill()
    first.wait()
    ok, line = clearly_refused(code, stderr, "busy", str(first.pid))
    return Outcome(name, REFUSED if ok else FAILED, line)


def changed_config(runs: Runs) -> Outcome:
    name = "--resume with a changed config (train.lr)"
    run = runs.work / "changed"
    if runs.train("diffusion", run, "train.max_steps=4").wait() != 0:
        return Outcome(name, FAILED, "the first run failed")
    code, stderr = ldm_in_process("train", CONFIGS["diffusion"], *runs.overrides("diffusion", run), "train.lr=0.5",
                                  "--resume")
    ok, line = clearly_refused(code, stderr, "train.lr", "--accept-changes")
    return Outcome(name, REFUSED if ok else FAILED, line)


# ---- faults that train nothing ------------------------------------------------------------------------

MALFORMED_CONFIGS = [  # (override, what the one line must name)
    ("train.max_stepz=3", "train.max_stepz"), ("train.max_steps=many", "train.max_steps"),
    ("train.max_steps=0", "train.max_steps"), ("train.lr=fast", "train.lr"),
    ("train.precision=bf17", "train.precision"),
    ("train.lr_schedule=wavy", "train.lr_schedule"), ("train.accumulate_grad_batches=-1", "accumulate_grad_batches"),
    ("data.resolution=30", "data.resolution"), ("data.resolution=4", "data.resolution"),
    ("data.val_fraction=1.5", "data.val_fraction"), ("data.batch_size=0", "data.batch_size"),
    ("data.source=/no/such/folder", "/no/such/folder"), ("data.caption_column=words", "caption column 'words'"),
    ("data.image_column=pixels", "image column 'pixels'"), ("data.max_samples=-3", "data.max_samples"),
    ("data=3", "data"), ("model.kind=gan", "model.kind"), ("model.channels=[64,128]", "model.channels"),
    ("model.downsampling_factor=3", "model.downsampling_factor"), ("model.norm_num_groups=7", "model.norm_num_groups"),
    ("loss.betas=[0.5]", "loss.betas"), ("loss.l1=-1", "loss.l1"), ("latent_scale.shfit=true", "latent_scale.shfit"),
    ("stage=painting", "painting"), ("nonsense", "section.key=value"),
]


def malformed_configs(runs: Runs) -> list[Outcome]:
    outcomes = []
    for override, named in MALFORMED_CONFIGS:
        run = runs.work / "malformed"
        code, stderr = ldm_in_process("train", CONFIGS["autoencoder"], *runs.overrides("autoencoder", run, steps=2),
                                      override)
        ok, line = clearly_refused(code, stderr, named)
        ok = ok and not (run / "autoencoder" / "checkpoints").exists() and not (run / "vae").exists()
        outcomes.append(Outcome(f"config: {override}", REFUSED if ok else FAILED, line))
        shutil.rmtree(run, ignore_errors=True)
    return outcomes


def malformed_data(work: Path) -> list[Outcome]:
    """Broken images and captions in one folder: each skipped and counted with its reason (as
    `ldm data check` reports it, reading the data exactly as training does), the good ones kept."""
    folder = work / "broken-data"
    folder.mkdir(parents=True)
    rows = []
    for i in range(6):
        Image.new("RGB", (SIZE, SIZE), (200, 30 * i, 30)).save(folder / f"good{i}.png")
        rows.append({"file_name": f"good{i}.png", "text": "a red square"})
    broken = {"truncated.png": "truncated", "not_an_image.png": "not an image", "empty.png": "not an image",
              "bomb.png": "too many pixels", "no_caption.png": "caption", "blank_caption.png": "caption"}
    (folder / "truncated.png").write_bytes((folder / "good0.png").read_bytes()[:60])
    (folder / "not_an_image.png").write_text("hello")
    (folder / "empty.png").write_bytes(b"")
    Image.new("RGB", (64, 64)).save(folder / "bomb.png")  # above the max_pixels given below
    for name in ("no_caption.png", "blank_caption.png"):
        Image.new("RGB", (SIZE, SIZE)).save(folder / name)
    captions = {"no_caption.png": "", "blank_caption.png": "   "}
    rows += [{"file_name": name, "text": captions.get(name, "x")} for name in broken]
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    report = check_data(DataConfig(source=str(folder), resolution=SIZE, max_pixels=1000, val_fraction=0.0))
    reasons = {Path(file).name: f"{reason}: {what}" for file, reason, what in report.skipped}
    outcomes = []
    for name, reason in broken.items():
        shown = reasons.get(name, "not reported")
        ok = reason in shown and report.usable == 6
        outcomes.append(Outcome(f"data: {name}", SURVIVED if ok else FAILED,
                                f"skipped and counted ({shown[:70]}); the 6 good images kept"))
    return outcomes + _refused_metadata(work)


def _refused_metadata(work: Path) -> list[Outcome]:
    outcomes = []
    for name, line, named in (("a malformed metadata.jsonl line", '{"file_name": "a.png", "text": ', "line 1"),
                              ("metadata.jsonl path outside its folder",
                               '{"file_name": "../../etc/passwd", "text": "x"}', "outside"),
                              ("a caption .txt that is not UTF-8", None, "UTF-8"),
                              ("a metadata.jsonl line without file_name", '{"text": "x"}', "file_name")):
        folder = work / f"meta-{len(outcomes)}"
        folder.mkdir()
        Image.new("RGB", (SIZE, SIZE)).save(folder / "a.png")
        if line is None:
            (folder / "a.txt").write_bytes(b"\xff\xfe caption")
        else:
            (folder / "metadata.jsonl").write_text(line + "\n")
        code, stderr = ldm_in_process("data", "check", str(folder), "--resolution", str(SIZE))
        ok, shown = clearly_refused(code, stderr, named)
        outcomes.append(Outcome(f"data: {name}", REFUSED if ok else FAILED, shown))
    return outcomes


def booby_trapped_folders(work: Path) -> list[Outcome]:
    clean = make_tiny_pipeline(work / "clean")
    traps = {
        "a .py file in a pipeline folder": lambda p: (p / "unet" / "evil.py").write_text("import os\n"),
        "a pipeline class from a code file (_class_name list)":
            lambda p: _edit_json(p / "model_index.json", _class_name=["evil", "EvilPipeline"]),
        "auto_map in a model config": lambda p: _edit_json(p / "text_encoder" / "config.json",
                                                             auto_map={"AutoModel": "evil.Model"}),
    }
    outcomes = []
    for name, trap in traps.items():
        folder = shutil.copytree(clean, work / f"trap-{len(outcomes)}")
        trap(folder)
        code, stderr = ldm_in_process("generate", str(folder), "a red circle", "--steps", "1", "--out",
                                      str(work / "trap-out"))
        ok, line = clearly_refused(code, stderr, str(folder))
        ok = ok and not (work / "trap-out").exists()
        outcomes.append(Outcome(f"model folder: {name}", REFUSED if ok else FAILED, line))
    return outcomes


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# ---- the table ------------------------------------------------------------------------------------------

def run_suite(work: Path, kills: int, seed: int, quick: bool,
              stages: tuple[str, ...] = ("autoencoder", "clip", "diffusion")) -> list[Outcome]:
    rng = random.Random(seed)
    runs = Runs(work)
    outcomes = malformed_configs(runs) + malformed_data(work) + booby_trapped_folders(work)
    if quick:
        return outcomes
    runs.prepare()
    for stage in stages:
        twin = work / f"twin-{stage}"
        if runs.train(stage, twin).wait() != 0:
            outcomes.append(Outcome(f"uninterrupted {stage} twin", FAILED, "did not train"))
            continue
        outcomes += [kill_and_resume(runs, stage, rng, i, twin) for i in range(kills)]
        if stage == "diffusion":
            outcomes.append(sigterm(runs, twin))
    outcomes += nan_steps(runs)
    outcomes += [truncated_checkpoint(runs), export_write_failure(runs), busy_folder(runs), changed_config(runs)]
    return outcomes


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def format_table(outcomes: list[Outcome]) -> str:
    width = max(len(o.fault) for o in outcomes)
    lines = [f"{'fault'.ljust(width)}  {'verdict'.ljust(15)}  detail", "-" * (width + 40)]
    lines += [f"{o.fault.ljust(width)}  {o.verdict.ljust(15)}  {shorten(o.detail, 110)}" for o in outcomes]
    counts = {v: sum(o.verdict == v for o in outcomes) for v in (SURVIVED, REFUSED, FAILED)}
    lines.append(f"\n{len(outcomes)} faults: {counts[SURVIVED]} survived, {counts[REFUSED]} refused clearly, "
                 f"{counts[FAILED]} FAILED")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs per training stage (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default 0)")
    parser.add_argument("--quick", action="store_true", help="only the faults that train nothing")
    parser.add_argument("--work", help="folder for the runs (default: a temporary one, removed)")
    parser.add_argument("--stages", nargs="+", default=list(CONFIGS), choices=list(CONFIGS),
                        help="the stages whose runs are killed (default all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        outcomes = run_suite(work, args.kills, args.seed, args.quick, tuple(args.stages))
    print(format_table(outcomes))
    sys.exit(1 if any(o.verdict == FAILED for o in outcomes) else 0)


if __name__ == "__main__":
    main()
