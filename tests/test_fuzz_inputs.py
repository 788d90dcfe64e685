"""Bad input, drawn at random (hypothesis): any value for any config key or command-line option is
either accepted (and then the command does its work and writes whole outputs) or refused in one line
that names the key or option, before anything is written - never a traceback, never a partial or
changed earlier output.

The suite draws a small budget of values for each key and option. The full run draws more (50 a
key, 300 command lines a command) and also runs `ldm train` for one step with two drawn values of
every key of the shapes autoencoder config:

    LDM_FUZZ_FULL=1 python -m pytest tests/test_fuzz_inputs.py -s

and prints its counts (cases, accepted, refused, failed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import types
import typing
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from tiny import make_tiny_pipeline

from ldm.cli import main as ldm_main
from ldm.core.errors import LdmError
from ldm.stages.registry import config_class, load_config

FULL = os.environ.get("LDM_FUZZ_FULL") == "1"
CONFIGS = ["autoencoder/kl_f4_shapes.yaml", "autoencoder/vq_f4_shapes.yaml", "clip/clip_shapes.yaml",
           "diffusion/ldm_shapes.yaml", "diffusion/lora_sd15.yaml"]
CONFIG_EXAMPLES = 50 if FULL else 8  # values drawn per config key
OPTION_EXAMPLES = 300 if FULL else 30  # command lines drawn per command
COUNTS: Counter = Counter()  # the full run's tally, printed at the end


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
# what a user may type as an option's value: numbers small and huge, non-finite, text, nothing
OPTION_VALUES = st.one_of(st.integers(-5, 40).map(str), st.integers(10**5, 10**30).map(str),
                          st.integers(-10**30, -1).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
                          st.text(max_size=10), st.sampled_from(["", "-", "--", "1e999", "nan", "0x10", "2**70"]))


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
    assert any(name in message for name in names), f"does not name {' or '.join(names)}: {message!r}"


def run_ldm(*args: str) -> tuple[int, str]:
    """`ldm ARGS` in this process: (exit status, stderr). An exception other than the CLI's own exit
    is a traceback the user would see: it fails the test with hypothesis's smallest example."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            ldm_main(list(args))
        except SystemExit as stop:
            return (stop.code if isinstance(stop.code, int) else 1), err.getvalue()
    return 0, err.getvalue()


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("ldm ")]
    return lines[-1] if lines else stderr


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


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
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    path = make_tiny_pipeline(root)
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
    args = ["generate", str(pipeline), prompt, "--steps", "2"]
    for option, value in choices:
        args += [f"{option}={value}"]  # `--opt=VALUE`: a value that starts with '-' stays a value
    args += ["--out", str(out)] if own_out else []
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
        names = [option for option, _ in choices] + [option.lstrip("-") for option, _ in choices] + ["prompt"]
        one_clear_line(last_line(stderr), *names)
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
    values = dict(choices)
    # in range but large takes long: a draw above 64 images or 64 px is cut to what the test can afford
    for option, cap in (("--n", 64), ("--n-test", 16), ("--size", 64)):
        if values.get(option, "").isdigit() and int(values[option]) > cap:
            values[option] = str(cap)
    args = ["data", "shapes", str(out), "--n", "4", "--n-test", "2", "--size", "16"]
    for option, value in values.items():
        args += [f"{option}={value}"]
    code, stderr = run_ldm(*args)
    if code == 0:
        assert whole_images(out / "train") or whole_images(out)
        COUNTS["data shapes accepted"] += 1
    else:
        one_clear_line(last_line(stderr), *values, *(o.lstrip("-") for o in values))
        assert not out.exists(), "a refused run left its output folder"
        COUNTS["data shapes refused"] += 1


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
