"""The package ships whole: every subpackage is listed in pyproject.toml, the configs go with it, and
every third-party package that ldm imports is declared."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import tomllib

import ldm

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(ldm.__file__).parent
# import name -> distribution name, where they differ
DISTRIBUTIONS = {"PIL": "pillow", "yaml": "pyyaml", "imageio_ffmpeg": "imageio-ffmpeg",
                 "lightning_utilities": "lightning"}
# imported only where an optional feature is used, each behind a clear error naming the package
OPTIONAL = {"bitsandbytes", "torch_fidelity"}


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_subpackage_and_the_configs_are_listed():
    listed = set(project()["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")}
    assert found | {"ldm.configs"} == listed


def test_every_imported_package_is_declared():
    declared = {dep.split(">")[0].split("=")[0].split("[")[0].strip().lower().replace("_", "-")
                for dep in project()["project"]["dependencies"]}
    imported = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    third_party = {name for name in imported if name not in sys.stdlib_module_names and name != "ldm"}
    missing = sorted(name for name in third_party - OPTIONAL
                     if DISTRIBUTIONS.get(name, name).lower().replace("_", "-") not in declared)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_the_file_names_ldm_spells_are_the_ones_diffusers_writes():
    from diffusers import DiffusionPipeline
    from diffusers.utils import CONFIG_NAME, SAFE_WEIGHTS_INDEX_NAME, SAFETENSORS_WEIGHTS_NAME

    from ldm.core import layout

    assert (layout.MODEL_CONFIG, layout.MODEL_WEIGHTS, layout.MODEL_WEIGHTS_INDEX) == (
        CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME)
    assert layout.MODEL_INDEX == DiffusionPipeline.config_name
