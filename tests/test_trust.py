"""Untrusted model folders: nothing in a folder can make ldm run code that came with it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from ldm.components.autoencoder import load_vae
from ldm.components.text_encoder import load_text_encoder
from ldm.core.errors import LdmError
from ldm.sampling.pipeline_io import load_pipeline


@pytest.fixture
def pipeline(kl_pipeline_path, tmp_path):
    """A copy of a tiny pipeline folder to booby-trap."""
    return shutil.copytree(kl_pipeline_path, tmp_path / "pipeline")


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_the_untouched_folder_loads(pipeline):
    assert load_pipeline(pipeline).unet is not None


def test_python_files_are_refused_wherever_they_are(pipeline):
    (pipeline / "unet" / "modeling.py").write_text("import os; os.system('echo owned')\n")
    with pytest.raises(LdmError, match=r"holds Python files \(unet/modeling.py\)"):
        load_pipeline(pipeline)
    with pytest.raises(LdmError, match="Python files"):
        load_vae(pipeline / "unet")  # any folder a loader reads


def test_a_pipeline_class_from_a_code_file_is_refused(pipeline):
    edit_json(pipeline / "model_index.json", _class_name=["my_pipeline", "EvilPipeline"])
    with pytest.raises(LdmError, match="names a pipeline class in a code file"):
        load_pipeline(pipeline)


def test_a_component_from_another_library_is_refused(pipeline):
    edit_json(pipeline / "model_index.json", unet=["evil_library", "UNet"])
    with pytest.raises(LdmError, match="component 'unet' comes from 'evil_library'"):
        load_pipeline(pipeline)


def test_auto_map_is_refused(pipeline):
    edit_json(pipeline / "text_encoder" / "config.json", auto_map={"AutoModel": "modeling.EvilModel"})
    with pytest.raises(LdmError, match="auto_map"):
        load_text_encoder(pipeline)


def test_pickled_weights_are_never_read(pipeline):
    weights = pipeline / "vae" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))  # only a pickle left
    with pytest.raises(LdmError, match="safetensors only"):
        load_vae(pipeline / "vae")


def test_the_cli_refuses_in_one_line(pipeline, tmp_path):
    (pipeline / "evil.py").write_text("raise SystemExit('owned')\n")
    result = subprocess.run([sys.executable, "-m", "ldm", "generate", str(pipeline), "a red circle", "--out",
                             str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "owned" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("ldm generate: error:")
    assert "Python files" in result.stderr
