"""A library's exception quoted as one line of an LdmError, whatever its message (even none)."""

from __future__ import annotations

import json

import pytest
import torch

from ldm.components import autoencoder, clip
from ldm.core.errors import LdmError, first_line, type_and_first_line
from ldm.stages.checkpoints import AtomicCheckpointIO


def test_first_line_of_a_message():
    assert first_line(ValueError("bad key\nTraceback details\nmore")) == "bad key"
    assert first_line(OSError("\n  \n  no such file  \nsecond")) == "no such file"
    assert type_and_first_line(RuntimeError("offline\nretry later")) == "RuntimeError: offline"


@pytest.mark.parametrize("message", ["", "   ", "\n\n"])
def test_an_empty_message_gives_the_type_name(message):
    assert first_line(OSError(message)) == "OSError"
    assert first_line(ValueError(message)) == "ValueError"
    assert type_and_first_line(OSError(message)) == "OSError"


def _raises(err: Exception):
    def load(*args, **kwargs):
        raise err
    return load


def test_an_autoencoder_loader_failing_without_a_message_is_one_ldm_error(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    silent = type("SilentAutoencoder", (), {"from_pretrained": staticmethod(_raises(OSError()))})
    monkeypatch.setitem(autoencoder.AUTOENCODER_CLASSES, "AutoencoderKL", silent)
    with pytest.raises(LdmError) as raised:
        autoencoder.load_vae(tmp_path)
    message = str(raised.value)
    assert message == (f"cannot load the autoencoder in {tmp_path} (weights load from safetensors only): "
                       "OSError")
    assert "\n" not in message


def test_a_clip_loader_failing_without_a_message_is_one_ldm_error(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    silent = type("SilentProcessor", (), {"from_pretrained": staticmethod(_raises(ValueError()))})
    monkeypatch.setattr(clip, "CLIPImageProcessorPil", silent)
    with pytest.raises(LdmError, match=r"^cannot load the CLIP model in .*: ValueError$"):
        clip.load_clip(tmp_path)


def test_a_checkpoint_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1, "weight": torch.ones(3)}, path)
    assert torch.load(path, weights_only=True)["step"] == 1

    def half_then_fail(obj, f):
        with open(f, "wb") as out:
            out.write(b"half a checkpoint")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, path)
    assert torch.load(path, weights_only=True)["step"] == 1  # the previous checkpoint is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary left
