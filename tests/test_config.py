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
