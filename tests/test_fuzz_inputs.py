"""Bad input, drawn at random (hypothesis): any value for any config key or command-line option is
either accepted (and then the command does its work and writes whole outputs) or refused in one line
that names the key or option, before anything is written - never a traceback, never a partial or
changed earlier output.

The commands drawn: `ldm generate`, `ldm data shapes`, `ldm animate`, `ldm evaluate autoencoder|
diffusion|walk` and `ldm data check`, each with one to three options of every kind (numbers, text,
paths, lists, flags). A path is drawn text or one of the module's files (its models, data and the
earlier results each command made); the commands run in an empty folder of their own, so what they
write anywhere shows, and is removed once checked.

The suite draws a small budget of values for each key and option. The full run draws more (50 a
key, 300 command lines a command, 100 for the commands that render) and also runs `ldm train` for
one step with two drawn values of every key of the shapes autoencoder config:

    LDM_FUZZ_FULL=1 python -m pytest tests/test_fuzz_inputs.py -s

and prints its counts (cases, accepted, refused, failed); a failed command line is counted and the
draws go on, and the failures are listed at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import types
import typing
from collections import Counter
from pathlib import Path

import pytest
import yaml
from eval_fixtures import check_schema, make_eval_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ldm.cli import main as ldm_main
from ldm.core.errors import LdmError, type_and_first_line
from ldm.stages.registry import config_class, load_config

FULL = os.environ.get("LDM_FUZZ_FULL") == "1"
CONFIGS = ["autoencoder/kl_f4_shapes.yaml", "autoencoder/vq_f4_shapes.yaml", "clip/clip_shapes.yaml",
           "diffusion/ldm_shapes.yaml", "diffusion/lora_sd15.yaml", "distill/lcm_shapes.yaml"]
CONFIG_EXAMPLES = 50 if FULL else 8  # values drawn per config key
OPTION_EXAMPLES = 300 if FULL else 30  # command lines drawn per command
SLOW_EXAMPLES = 100 if FULL else 12  # command lines drawn for a command that renders (animate, evaluate)
COUNTS: Counter = Counter()  # the full run's tally, printed at the end
FAILED: dict[str, list[str]] = {}  # the full run's failed command lines, by command
PLAIN_NUMBER = re.compile(r"\d+(\.\d+)?")
NEGATIVE_NUMBER = re.compile(r"-\d+|-\d*\.\d+")  # what argparse reads as a value, not an option


# ---- what is drawn ----------------------------------------------------------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-50, 300), st.integers(-2**80, 2**80),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
AWKWARD = st.sampled_from(["", "0", "-1", "1e400", ".nan", "-.inf", "[]", "{}", "[1, [2]]", "null", "yes",
                           "'x' * 3", ": :", "[", "{a: 1", "2026-12-07", "0x10", "1_000", "~", "&a *a"])


def yaml_text(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


# what a user may type after `key=`: YAML values of every type and shape, or any text at all
CONFIG_VALUES = st.one_of(SCALARS.map(yaml_text), st.lists(SCALARS, max_size=4).map(yaml_text),
                          st.dictionaries(st.text(max_size=6), SCALARS, max_size=2).map(yaml_text),
                          st.text(max_size=16), AWKWARD)
# what a user may type as an option's value: numbers small and huge, non-finite, text (any but the
# NUL character, which no command line can hold), nothing
OPTION_VALUES = st.one_of(st.integers(-5, 40).map(str), st.integers(10**5, 10**30).map(str),
                          st.integers(-10**30, -1).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
                          st.text(st.characters(exclude_characters="\x00"), max_size=10),
                          st.sampled_from(["", "-", "--", "1e999", "nan", "0x10", "2**70"]))


# Places a path option may name besides drawn text, filled in by `placed`: a new folder, an earlier
# result, the module's models and data (inputs), the folder the command runs in.
PLACES = ["{new}", "{new}/deeper", "{earlier}", "{walk}", "{pipeline}", "{vae}", "{clip}", "{data}", "{file}",
          "{audio}", "."]


def inside_cwd(text: str) -> bool:
    """A drawn path stays inside the folder the command runs in: the suite may run as root, and no
    drawn path may write to (or scan) the machine's own folders. Nor does it hold a newline: every
    command quotes a path as it is, so its refusal would be two lines (left to ldm/cli's printing)."""
    return not text.startswith(("/", "~")) and ".." not in text and "\n" not in text


PATH_VALUES = st.one_of(st.sampled_from(PLACES), OPTION_VALUES.filter(inside_cwd))
# one of several values after an option (nargs): text that starts with '-' would be another option
LIST_VALUES = OPTION_VALUES.filter(lambda text: not text.startswith("-") or NEGATIVE_NUMBER.fullmatch(text))


@dataclasses.dataclass(frozen=True)
class Options:
    """A command's options, by what the user types after them."""

    values: tuple[str, ...] = ()  # one value (OPTION_VALUES)
    paths: tuple[str, ...] = ()  # a file or folder (PATH_VALUES)
    lists: tuple[str, ...] = ()  # one or more values (nargs)
    flags: tuple[str, ...] = ()  # none
    # (option, words it takes): drawn beside OPTION_VALUES, which would seldom hit one ("--split=test")
    words: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def draw(self):
        """One to three different options, each (option, value): text, a list, or None for a flag."""
        kinds = [st.tuples(st.sampled_from(names), values) for names, values in (
            (self.values, OPTION_VALUES), (self.paths, PATH_VALUES),
            (self.lists, st.lists(LIST_VALUES, min_size=1, max_size=3)), (self.flags, st.none())) if names]
        if self.words:
            kinds.append(st.sampled_from(self.words).flatmap(
                lambda option_words: st.tuples(st.just(option_words[0]), st.sampled_from(option_words[1]))))
        return st.lists(st.one_of(kinds), min_size=1, max_size=3, unique_by=lambda choice: choice[0])


def placed(text: str, places: dict[str, Path]) -> str:
    for name, path in places.items():
        text = text.replace("{" + name + "}", str(path))
    return text


def as_args(choices: list[tuple], places: dict[str, Path] | None = None, caps: dict[str, float] | None = None):
    """The drawn options as typed: `--opt=VALUE` (a value that starts with '-' stays a value),
    `--opt V1 V2`, `--flag`; places filled in; a number above its option's cap cut to it."""
    args = []
    for option, value in choices:
        cap = (caps or {}).get(option)
        if value is None:
            args.append(option)
        elif isinstance(value, list):
            args += [option, *(capped(v, cap) for v in value)]
        else:
            args.append(f"{option}={capped(placed(value, places or {}), cap)}")
    return args


def config_keys(cls: type, prefix: str = "") -> list[str]:
    """Every leaf key of a stage's config (section.key), found by walking its dataclasses."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        members = typing.get_args(hint) if union else (hint,)
        nested = next((m for m in members if dataclasses.is_dataclass(m)), None)
        keys += config_keys(nested, f"{prefix}{f.name}.") if nested else [f"{prefix}{f.name}"]
    return keys


def config_cases() -> list[tuple[str, str]]:
    cases = []
    for config in CONFIGS:
        stage = yaml.safe_load((Path(__file__).parents[1] / "configs" / config).read_text())["stage"]
        cases += [(config, key) for key in config_keys(config_class(stage))]
    return cases


# ---- the contract -------------------------------------------------------------------------------------

def one_clear_line(message: str, *names: str) -> None:
    assert message and "\n" not in message.strip(), f"not one line: {message!r}"
    assert "Traceback" not in message, message
    said = message.lower()  # "Inception weights not found" names --inception
    assert any(name.lower() in said for name in names), f"does not name {' or '.join(names)}: {message!r}"


def run_ldm(*args: str) -> tuple[int, str]:
    """`ldm ARGS` in this process: (exit status, stderr). An exception other than the CLI's own exit
    is a traceback the user would see: it fails the test with hypothesis's smallest example."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            ldm_main(list(args))
        except SystemExit as stop:
            return (stop.code if isinstance(stop.code, int) else 1), err.getvalue()
    return 0, err.getvalue()


def last_line(stderr: str) -> str:
    # lines end at "\n" (what splitlines also ends them at, "\x1e" or "\x85", may be in a path the user gave)
    lines = [line for line in stderr.strip().split("\n") if line.startswith("ldm ")]
    return lines[-1] if lines else stderr


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file's hash and every folder under `folder`, by path: an empty folder left behind shows."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(folder.rglob("*"))}


def named(choices: list[tuple]) -> list[str]:
    """What a refusal of the drawn options may name: each option, with or without its dashes, or in
    words ("prompts file not found")."""
    return [name for option, _ in choices for name in (option, option.lstrip("-"), option[2:].replace("-", " "))]


def capped(text: str, cap: float | None) -> str:
    """A plain number above `cap` (in range, but slower than the suite can afford) cut to it; any
    other text as it is."""
    if cap is None or not PLAIN_NUMBER.fullmatch(text) or float(text) <= cap:
        return text
    return str(cap) + (".0" if "." in text else "")  # a decimal stays one: "--n 100.5" is still refused


# ---- config keys --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("config", "key"), config_cases())
def test_any_value_for_any_config_key_is_loaded_or_refused_in_one_line(config, key):
    @settings(max_examples=CONFIG_EXAMPLES, deadline=None, derandomize=not FULL, database=None)
    @given(raw=CONFIG_VALUES)
    def check(raw):
        try:
            load_config(config, [f"{key}={raw}"])
            COUNTS["config accepted"] += 1
        except LdmError as refused:
            # the key, or its section when the problem is the section as a whole (`lora:` without a base)
            one_clear_line(str(refused), key.split(".")[-1], key.split(".")[0] + ":")
            COUNTS["config refused"] += 1

    check()


# ---- command-line options -----------------------------------------------------------------------------

GENERATE_OPTIONS = ["--n", "--seed", "--steps", "--guidance", "--eta", "--height", "--width", "--strength",
                    "--batch-size", "--sampler", "--dtype", "--negative", "--device"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """The module's folder: run/pipeline, run/clip and shapes/ (tests/eval_fixtures.py), the earlier
    results beside them, and cwd/, where the commands run, so a drawn relative path lands there."""
    root = tmp_path_factory.mktemp("fuzz")
    make_eval_run(root)
    (root / "cwd").mkdir()
    return root


@pytest.fixture(scope="module")
def pipeline(root):
    path = root / "run" / "pipeline"
    code, stderr = run_ldm("generate", str(path), "a red circle", "--steps", "2")  # an earlier result
    assert code == 0, stderr
    return path


def whole_images(folder: Path) -> list[Path]:
    images = sorted(folder.glob("*.png"))
    for image in images:
        with Image.open(image) as opened:
            opened.load()  # a truncated PNG raises here
    return images


@settings(max_examples=OPTION_EXAMPLES, deadline=None, derandomize=not FULL, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(choices=st.lists(st.tuples(st.sampled_from(GENERATE_OPTIONS), OPTION_VALUES), min_size=1, max_size=3,
                        unique_by=lambda choice: choice[0]),
       prompt=st.one_of(st.just("a blue square"), st.text(max_size=30)),
       own_out=st.booleans())
def test_generate_runs_or_refuses_any_option_values_in_one_line(pipeline, tmp_path, choices, prompt, own_out):
    earlier = pipeline.parent / "samples"
    before = fingerprint(earlier)
    siblings = {p.name for p in pipeline.parent.iterdir()}
    out = tmp_path / f"out-{COUNTS['generate']}"
    COUNTS["generate"] += 1
    # the prompt after "--": one that starts with '-' ("--", "--s") stays a prompt, as a user quotes it
    args = ["generate", "--steps=2", *as_args(choices), *([f"--out={out}"] if own_out else []), "--",
            str(pipeline), prompt]
    code, stderr = run_ldm(*args)
    if code == 0:
        written = out if own_out else next(pipeline.parent / name for name in
                                           {p.name for p in pipeline.parent.iterdir()} - siblings)
        n = int(dict(choices).get("--n", 1))
        assert len(whole_images(written)) == n + 1  # the images and their grid, each whole
        if not own_out:
            shutil.rmtree(written)
        COUNTS["generate accepted"] += 1
    else:
        one_clear_line(last_line(stderr), *named(choices), "prompt")
        assert not out.exists(), "a refused run left its output folder"
        assert {p.name for p in pipeline.parent.iterdir()} == siblings, "a refused run left a folder"
        COUNTS["generate refused"] += 1
    assert fingerprint(earlier) == before, "an earlier result changed"


DATA_SHAPES_OPTIONS = ["--n", "--n-test", "--size", "--seed", "--colours"]


@settings(max_examples=OPTION_EXAMPLES, deadline=None, derandomize=not FULL, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(choices=st.lists(st.tuples(st.sampled_from(DATA_SHAPES_OPTIONS), OPTION_VALUES), min_size=1, max_size=3,
                        unique_by=lambda choice: choice[0]))
def test_data_shapes_makes_a_whole_dataset_or_refuses_in_one_line(tmp_path, choices):
    out = tmp_path / f"shapes-{COUNTS['data shapes']}"
    COUNTS["data shapes"] += 1
    # in range but large takes long: a draw above 64 images or 64 px is cut to what the test can afford
    args = ["data", "shapes", str(out), "--n", "4", "--n-test", "2", "--size", "16",
            *as_args(choices, caps={"--n": 64, "--n-test": 16, "--size": 64})]
    code, stderr = run_ldm(*args)
    if code == 0:
        assert whole_images(out / "train") or whole_images(out)
        COUNTS["data shapes accepted"] += 1
    else:
        one_clear_line(last_line(stderr), *named(choices))
        assert not out.exists(), "a refused run left its output folder"
        COUNTS["data shapes refused"] += 1


# ---- animate, evaluate, data check: options of every kind, paths among the module's files ------------

@pytest.fixture(scope="module")
def places(root, pipeline) -> dict[str, Path]:
    """What a drawn path may name (PLACES): the module's models and data, and the earlier results of
    each command, made by the commands themselves: a walk, an evaluation with its grid and samples,
    previews. `earlier` and `new` are each test's own (`for_test`)."""
    from ldm.apps.animate.audio import beat_track, write_wav

    results = root / "results"
    found = {"pipeline": pipeline, "vae": pipeline / "vae", "clip": root / "run" / "clip", "data": root / "shapes",
             "file": root / "shapes" / "train" / "metadata.jsonl", "walk": root / "walks" / "earlier",
             "audio": write_wav(root / "beats.wav", beat_track(silence=0.25, beats=0.75)),
             "prompts": root / "prompts.txt", "evaluation": results / "earlier.json",
             "samples": results / "samples", "previews": root / "previews" / "earlier"}
    found["prompts"].write_text("a red circle\n")
    for args in (["animate", pipeline, "--prompts", "a red circle", "a blue square", "--frames", "2", "--steps",
                  "2", "--out", found["walk"]],
                 ["evaluate", "autoencoder", found["vae"], "--data", found["data"], "--out", found["evaluation"],
                  "--grid", results / "earlier.png"],
                 ["evaluate", "diffusion", pipeline, "--data", found["data"], "--prompts-file", found["prompts"],
                  "--n", "2", "--steps", "2", "--samples", found["samples"]],
                 ["data", "check", found["data"], "--preview", found["previews"]]):
        code, stderr = run_ldm(*map(str, args))
        assert code == 0, stderr
    return found


def for_test(places: dict[str, Path], earlier: str) -> dict[str, Path]:
    """The places of one draw: `earlier` names the command's earlier result, `new` a folder not made yet."""
    COUNTS["draws"] += 1
    return {**places, "earlier": places[earlier], "new": places["pipeline"].parents[1] / f"new-{COUNTS['draws']}"}


def given_path(args: list[str], option: str, root: Path) -> Path | None:
    """Where the last `--option=PATH` of `args` points, from the folder the command ran in."""
    values = [arg.partition("=")[2] for arg in args if arg.startswith(option + "=")]
    return root / "cwd" / values[-1] if values else None


def path_named(drawn: str, places: dict[str, Path]) -> list[str]:
    """A refusal that names the path the user gave names the argument: a place, not text so short
    that any line holds it (".", "-")."""
    return [placed(drawn, places)] if drawn in PLACES[:-1] else []


def run_drawn(root: Path, args: list[str], choices: list[tuple], whole, *also_named: str,
              may_change: tuple[str, ...] = ()) -> None:
    """`ldm ARGS`, run in root/cwd, held to the contract (`check_contract`). The suite fails at the
    first broken draw (hypothesis then shrinks it); the full run counts it and goes on, to report
    every kind of failure at once (`no_failures`)."""
    command = " ".join(args[:2] if args[0] in ("evaluate", "data") else args[:1])
    COUNTS[command] += 1
    try:
        check_contract(root, args, command, choices, whole, also_named, may_change)
    except Exception as failure:  # a traceback from the command, or a broken contract
        if not FULL:
            raise
        COUNTS[f"{command} failed"] += 1
        FAILED.setdefault(command, []).append(f"{' '.join(args)}\n    {type_and_first_line(failure)}")


def check_contract(root: Path, args: list[str], command: str, choices: list[tuple], whole, also_named: tuple,
                   may_change: tuple[str, ...]) -> None:
    """Accepted: `whole()` holds and no earlier file changed (but `may_change`, what a resumed
    command rewrites), then what it wrote is removed; or refused in one line naming a drawn option
    (or `also_named`), with nothing written, changed or removed."""
    before = fingerprint(root)
    with contextlib.chdir(root / "cwd"):
        code, stderr = run_ldm(*args)
    after = fingerprint(root)
    if code == 0:
        whole()
        changed = [path for path in before if after.get(path) != before[path] and path not in may_change]
        assert not changed, f"an accepted run changed or removed earlier files: {changed[:5]}"
        for path in sorted(set(after) - set(before), key=lambda path: -path.count(os.sep)):  # deepest first
            (root / path).rmdir() if after[path] == "folder" else (root / path).unlink()
        COUNTS[f"{command} accepted"] += 1
    else:
        one_clear_line(last_line(stderr), *named(choices), *also_named)
        left = sorted(path for path in after.keys() | before.keys() if after.get(path) != before.get(path))
        assert not left, f"a refused run wrote, changed or removed {left[:5]}"
        COUNTS[f"{command} refused"] += 1


def no_failures(command: str) -> None:
    failed = FAILED.get(command, [])
    assert not failed, f"{len(failed)} of {COUNTS[command]} draws failed:\n" + "\n".join(failed[:20])


def whole_walk(out: Path) -> None:
    assert len(whole_images(out / "frames")) >= 2
    with Image.open(out / "walk.gif") as gif:
        for frame in range(gif.n_frames):
            gif.seek(frame)
            gif.load()
    assert (out / "walk.mp4").stat().st_size > 0
    json.loads((out / "smoothness.json").read_text())


def whole_evaluation(args: list[str], root: Path) -> None:
    """--out a whole evaluation (tests/eval_fixtures.py's schema), --grid a whole PNG, --samples whole images."""
    out, grid, samples = (given_path(args, option, root) for option in ("--out", "--grid", "--samples"))
    if out is not None:
        check_schema(json.loads(out.read_text()))
    if grid is not None:
        with Image.open(grid) as image:
            image.load()
    if samples is not None:
        assert whole_images(samples)


def whole_previews(preview: Path | None) -> None:
    assert preview is None or whole_images(preview), "accepted, but no preview images"


def drawn(examples: int):
    """The settings of a command's draws (an inner function of the test: the fixtures stay outside)."""
    return settings(max_examples=examples, deadline=None, derandomize=not FULL, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


ANIMATE = Options(values=("--frames", "--fps", "--height", "--width", "--steps", "--guidance", "--batch-size",
                          "--video-scale", "--even-passes", "--audio-start", "--audio-end", "--audio-smooth",
                          "--audio-feature", "--sampler", "--negative-prompt", "--prompt", "--lora-scale"),
                  paths=("--out", "--audio", "--timeline", "--distance-model", "--vae", "--lora"),
                  lists=("--prompts", "--seeds", "--times"),
                  flags=("--loop", "--linear", "--even-motion", "--keep-jumps", "--on-beats", "--seed-walk"),
                  words=(("--sampler", ("ddim", "dpmsolver++", "euler")), ("--audio-feature", ("onsets", "energy"))))
# in range, but more frames or pixels than the suite can afford (frames x passes x steps)
ANIMATE_CAPS = {"--frames": 4, "--fps": 8, "--even-passes": 2, "--steps": 3, "--height": 32, "--width": 32,
                "--video-scale": 3, "--times": 1}
CLOCKS = ("--times", "--timeline", "--audio")  # a walk on a clock takes no --frames
# resumed, the earlier walk keeps its frames; its videos are made anew (another fps, --video-scale)
RESUMED = tuple(str(Path("walks", "earlier", name)) for name in ("walk.gif", "walk.mp4", "smoothness.json"))


def test_animate_renders_a_whole_walk_or_refuses_in_one_line(root, places):
    @drawn(SLOW_EXAMPLES)
    @given(choices=ANIMATE.draw(), with_audio=st.booleans())
    def draw(choices, with_audio):
        at = for_test(places, "walk")
        clock = with_audio or any(option in CLOCKS for option, _ in choices)
        args = ["animate", str(at["pipeline"]), "--prompts", "a red circle", "a blue square", "--steps=2",
                f"--out={at['new']}", *(["--fps=4"] if clock else ["--frames=2"]),
                *([f"--audio={at['audio']}"] if with_audio else []), *as_args(choices, at, ANIMATE_CAPS)]
        out = given_path(args, "--out", root)
        run_drawn(root, args, choices, lambda: whole_walk(out), "keyframe", "prompt", "seed", "audio",
                  may_change=RESUMED)

    draw()
    no_failures("animate")


SPLITS = ("--split", ("train", "test"))
EVALUATE_AUTOENCODER = Options(values=("--split", "--max-images"), paths=("--data", "--grid", "--out"),
                               words=(SPLITS,))


def test_evaluate_autoencoder_measures_or_refuses_in_one_line(root, places):
    @drawn(OPTION_EXAMPLES)
    @given(choices=EVALUATE_AUTOENCODER.draw(), vae=st.one_of(st.just("{vae}"), PATH_VALUES))
    def draw(choices, vae):
        at = for_test(places, "evaluation")
        args = ["evaluate", "autoencoder", f"--data={at['data']}", *as_args(choices, at), "--", placed(vae, at)]
        run_drawn(root, args, choices, lambda: whole_evaluation(args, root), "autoencoder", *path_named(vae, at))

    draw()
    no_failures("evaluate autoencoder")


EVALUATE_DIFFUSION = Options(values=("--n", "--seed", "--steps", "--guidance", "--split"),
                             paths=("--data", "--prompts-file", "--clip", "--inception", "--samples", "--out"),
                             words=(SPLITS,))


def test_evaluate_diffusion_measures_or_refuses_in_one_line(root, places):
    @drawn(SLOW_EXAMPLES)
    @given(choices=EVALUATE_DIFFUSION.draw(), pipeline=st.one_of(st.just("{pipeline}"), PATH_VALUES))
    def draw(choices, pipeline):
        at = for_test(places, "samples")
        args = ["evaluate", "diffusion", f"--data={at['data']}", f"--prompts-file={at['prompts']}", "--n=2",
                "--steps=2", *as_args(choices, at, caps={"--n": 2, "--steps": 3}), "--", placed(pipeline, at)]
        run_drawn(root, args, choices, lambda: whole_evaluation(args, root), "pipeline", *path_named(pipeline, at))

    draw()
    no_failures("evaluate diffusion")


def test_evaluate_walk_measures_or_refuses_in_one_line(root, places):
    @drawn(SLOW_EXAMPLES)
    @given(choices=Options(paths=("--out",)).draw(), folder=st.one_of(st.just("{walk}"), PATH_VALUES))
    def draw(choices, folder):
        at = for_test(places, "evaluation")
        args = ["evaluate", "walk", *as_args(choices, at), "--", placed(folder, at)]
        run_drawn(root, args, choices, lambda: whole_evaluation(args, root), "walk", *path_named(folder, at))

    draw()
    no_failures("evaluate walk")


DATA_CHECK = Options(values=("--split", "--resolution", "--background", "--max-pixels", "--empty-captions",
                             "--image-column", "--caption-column", "--val-fraction", "--max-samples"),
                     paths=("--config", "--tokenizer", "--preview"), lists=("--buckets",),
                     words=(SPLITS, ("--empty-captions", ("skip", "keep")), ("--background", ("black", "#00ff00")),
                            ("--image-column", ("image",)), ("--caption-column", ("text",))))


def test_data_check_reports_or_refuses_in_one_line(root, places):
    @drawn(OPTION_EXAMPLES)
    @given(choices=DATA_CHECK.draw(), source=st.one_of(st.just("{data}"), PATH_VALUES))
    def draw(choices, source):
        at = for_test(places, "previews")
        args = ["data", "check", *as_args(choices, at, caps={"--resolution": 64}), "--", placed(source, at)]
        preview = given_path(args, "--preview", root)
        run_drawn(root, args, choices, lambda: whole_previews(preview), "source", "data folder",
                  *path_named(source, at))

    draw()
    no_failures("data check")


# ---- the full run: every accepted config value trains one step ------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="the full run: LDM_FUZZ_FULL=1")
def test_full_run_every_accepted_config_value_trains_a_step_or_is_refused(tmp_path_factory):
    from ldm.data.shapes.generator import make_shapes_dataset

    data = make_shapes_dataset(tmp_path_factory.mktemp("data"), n=32, size=32, seed=0, n_test=8)
    base = ["train.max_steps=1", "train.warmup_steps=0", "train.max_minutes=0.2", "data.batch_size=4",
            "train.val_every_n_steps=1",
            "train.limit_val_batches=1", f"data.source={data}"]
    failed = []
    for config in CONFIGS[:1]:
        stage = yaml.safe_load((Path(__file__).parents[1] / "configs" / config).read_text())["stage"]
        for key in config_keys(config_class(stage)):
            train_one_step(config, key, base, failed, tmp_path_factory)
    print("\nfuzz counts:", dict(COUNTS), "failed:", len(failed))
    assert not failed, "\n".join(failed[:20])


def train_one_step(config: str, key: str, base: list[str], failed: list[str], tmp_path_factory) -> None:
    """Two drawn values of `key`, each trained for a step: a whole export, or one line and none."""

    @settings(max_examples=2, deadline=None, database=None)
    @given(raw=CONFIG_VALUES)
    def check(raw):
        run = tmp_path_factory.mktemp("run")
        code, stderr = run_ldm("train", config, *base, f"run_dir={run}", f"{key}={raw}")
        COUNTS["train " + ("accepted" if code == 0 else "refused")] += 1
        exported = (run / "vae" / "config.json").is_file()
        try:
            if code == 0:
                assert exported, "accepted, but no whole export"
            else:
                one_clear_line(last_line(stderr), key.split(".")[-1], "data", "model", "run_dir")
                assert not exported, "refused, but exported"
        except AssertionError as err:
            failed.append(f"{key}={raw!r}: {err}")

    check()


def teardown_module():
    if FULL:
        print("\nfuzz counts:", dict(COUNTS))
