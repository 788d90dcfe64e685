import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from image_kinds import write_mixed_aspect_folder
from safetensors.torch import load_file

from ldm.data.shapes.generator import make_shapes_dataset

TOY = Path(__file__).with_name("toy_stage.py")


def run_toy(run_dir, data, *extra):
    return subprocess.run([sys.executable, str(TOY), str(run_dir), str(data), *extra],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
# Square images: tests/test_reproducible.py kills and resumes a whole `ldm train` run.
@pytest.mark.parametrize("buckets", [True], ids=["buckets"])
def test_sigkilled_run_resumes_to_the_same_weights(tmp_path, buckets):
    if buckets:  # 24 training images of 3 aspect ratios, random crops: 7 batches of 1-4 an epoch
        data = write_mixed_aspect_folder(tmp_path / "data", n=30)
    else:
        data = make_shapes_dataset(tmp_path / "data", n=30, size=16, seed=0)  # 24 train: 6 batches/epoch
    flags = ["--buckets"] if buckets else []
    whole = run_toy(tmp_path / "whole", data, "-", *flags)
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert "global_step 14" in whole.stdout

    killed = run_toy(tmp_path / "crash", data, "9", *flags)  # dies mid-epoch, after step 8's checkpoint
    assert killed.returncode == -signal.SIGKILL
    ckpts = tmp_path / "crash" / "toy" / "checkpoints"
    assert (ckpts / "last.ckpt").exists()
    assert not list(ckpts.glob("*.tmp*"))

    resumed = run_toy(tmp_path / "crash", data, "-", "--resume", *flags)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "global_step 14" in resumed.stdout
    a = load_file(tmp_path / "whole" / "final.safetensors")
    b = load_file(tmp_path / "crash" / "final.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    # only the last K step checkpoints are kept, plus last.ckpt
    assert len(list(ckpts.glob("step*.ckpt"))) == 2
    assert (tmp_path / "crash" / "toy" / "loss.png").exists()
