from dataclasses import field

import pytest
from pydantic.dataclasses import dataclass

from ldm.core.config import SECTION, apply_overrides, build
from ldm.core.errors import LdmError
from ldm.data.config import DataConfig


@dataclass(config=SECTION)
class Inner:
    lr: float = 1e-4
    steps: int = 10


@dataclass(config=SECTION)
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)
    limit: int | None = None


def test_builds_nested_dataclasses_and_widens_int_to_float():
    cfg = build(Outer, {"name": "x", "inner": {"lr": 1, "steps": 3}, "tags": ["a"]})
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)
    assert cfg.inner.steps == 3 and cfg.tags == ["a"] and cfg.limit is None


def test_exponent_without_a_dot_reads_as_a_float():
    # YAML 1.1 reads "2e-3" as a string; a float key takes it as the number it means.
    cfg = build(Outer, apply_overrides({"name": "x"}, ["inner.lr=2e-3"]))
    assert cfg.inner.lr == 2e-3
    with pytest.raises(LdmError, match=r"inner.lr must be float"):
        build(Outer, {"name": "x", "inner": {"lr": "fast"}})


def test_misspelled_key_is_named_with_a_suggestion():
    with pytest.raises(LdmError, match=r"unknown config key 'inner.stepz'.*did you mean 'steps'"):
        build(Outer, {"name": "x", "inner": {"stepz": 3}})


def test_wrong_type_names_the_key():
    with pytest.raises(LdmError, match=r"inner.steps must be int"):
        build(Outer, {"name": "x", "inner": {"steps": "many"}})


def test_missing_required_key_is_named():
    with pytest.raises(LdmError, match="missing config key 'name'"):
        build(Outer, {})


def test_overrides_parse_values_as_yaml():
    data = apply_overrides({"inner": {"steps": 1}}, ["inner.steps=5", "limit=null", "name=run"])
    assert data == {"inner": {"steps": 5}, "limit": None, "name": "run"}
    with pytest.raises(LdmError, match="must look like"):
        apply_overrides({}, ["nonsense"])


def test_post_init_checks_become_config_errors():
    with pytest.raises(LdmError, match="val_fraction"):
        build(DataConfig, {"source": "x", "val_fraction": 1.5})


# Values the fault suite did not hold, that reached torch or trained silently (issue 28): each is
# refused on loading, through `ldm train`, in one line naming the key, the value and what is allowed.
OUT_OF_RANGE = [
    ("diffusion/ldm_shapes.yaml", "train.lr=-1", "train.lr must be greater than 0, got -1"),
    ("autoencoder/kl_f4_shapes.yaml", "model.latent_channels=0",
     "model.latent_channels must be greater than or equal to 1, got 0"),
    ("diffusion/ldm_shapes.yaml", "ema.decay=2", "ema.decay must be less than 1, got 2"),
    ("diffusion/ldm_shapes.yaml", "loss.snr_gamma=-1", "loss.snr_gamma must be greater than 0, got -1"),
    ("diffusion/ldm_shapes.yaml", "train.warmup_steps=-10",
     "train.warmup_steps must be greater than or equal to 0, got -10"),
    ("diffusion/ldm_shapes.yaml", "train.gradient_clip=-1", "train.gradient_clip must be greater than 0, got -1"),
    ("clip/clip_shapes.yaml", "train.lr=.nan", "train.lr must be a finite number, got nan"),
    ("autoencoder/kl_f4_shapes.yaml", "train.max_minutes=0", "train.max_minutes must be greater than 0, got 0"),
]


@pytest.mark.parametrize(("config", "override", "message"), OUT_OF_RANGE, ids=[o for _, o, _ in OUT_OF_RANGE])
def test_an_out_of_range_value_is_one_line_naming_the_key(tmp_path, capsys, config, override, message):
    from ldm.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["train", config, override, f"run_dir={tmp_path}"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # refused before anything was written


TRAIN_COUNTS = ("max_steps", "val_every_n_steps", "checkpoint_every_n_steps", "accumulate_grad_batches",
                "log_every_n_steps")
# Ranges that only the fields' types (Count, Fraction, NonNegative) check: no __post_init__ repeats them.
TYPED_RANGES = [
    *(("autoencoder/kl_f4_shapes.yaml", f"train.{key}=0", f"train.{key} must be greater than or equal to 1, got 0")
      for key in TRAIN_COUNTS),
    ("diffusion/ldm_shapes.yaml", "lora.rank=0", "lora.rank must be greater than or equal to 1, got 0"),
    ("distill/lcm_shapes.yaml", "consistency.huber_c=0", "consistency.huber_c must be greater than 0, got 0"),
    ("distill/lcm_shapes.yaml", "consistency.target_decay=1", "consistency.target_decay must be less than 1, got 1"),
    ("diffusion/ldm_shapes.yaml", "lora.dropout=1", "lora.dropout must be less than 1, got 1"),
    ("diffusion/ldm_shapes.yaml", "caption_dropout=1", "caption_dropout must be less than 1, got 1"),
    ("autoencoder/kl_f4_shapes.yaml", "loss.kl=-1", "loss.kl must be greater than or equal to 0, got -1"),
    ("autoencoder/kl_f4_shapes.yaml", "loss.disc=-0.5", "loss.disc must be greater than or equal to 0, got -0.5"),
]


@pytest.mark.parametrize(("config", "override", "message"), TYPED_RANGES, ids=[o for _, o, _ in TYPED_RANGES])
def test_a_value_out_of_its_types_range_is_refused_naming_the_key(config, override, message):
    from ldm.stages.registry import load_config

    with pytest.raises(LdmError) as refused:
        load_config(config, [override, "run_dir=unused"])
    assert str(refused.value).endswith(f": {message}")


def test_a_yaml_error_is_one_line_with_its_place(tmp_path, capsys):
    from ldm.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: diffusion\ntrain:\n  lr: 1e-3\n   max_steps: 10\n")
    with pytest.raises(SystemExit):
        main(["train", str(bad)])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"config file {bad} is not valid YAML: line 4, column 13: mapping values are not allowed here" in err
