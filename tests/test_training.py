import pytest
import torch

from ldm.core.errors import LdmError
from ldm.data.config import DataConfig
from ldm.stages import launch
from ldm.stages.checkpoints import check_resume
from ldm.stages.launch import resolve_precision, resolve_processes
from ldm.stages.run_config import RunConfig, TrainConfig
from ldm.stages.trainer import resolve_checkpoint


def test_precision_follows_config_then_accelerate_then_fp32():
    assert resolve_precision(None, {}) == "32-true"
    assert resolve_precision("bf16", {}) == "bf16-mixed"
    assert resolve_precision(None, {"ACCELERATE_MIXED_PRECISION": "bf16"}) == "bf16-mixed"
    assert resolve_precision(None, {"ACCELERATE_MIXED_PRECISION": "fp16"}) == "16-mixed"
    assert resolve_precision(None, {"ACCELERATE_MIXED_PRECISION": "no"}) == "32-true"
    assert resolve_precision("16-mixed", {"ACCELERATE_MIXED_PRECISION": "fp16"}) == "16-mixed"
    # "no" is what accelerate launch sets when not asked for anything: the config decides
    assert resolve_precision("bf16-mixed", {"ACCELERATE_MIXED_PRECISION": "no"}) == "bf16-mixed"


def test_auto_precision_is_bf16_only_where_native(monkeypatch):
    assert resolve_precision("auto", {"ACCELERATE_MIXED_PRECISION": "fp16"}) == "16-mixed"
    monkeypatch.setattr(launch, "native_bf16", lambda accelerator: False)
    assert resolve_precision("auto", {}) == "32-true"
    with pytest.warns(UserWarning, match="without native bf16 is emulated"):
        assert resolve_precision("bf16-mixed", {}) == "bf16-mixed"
    monkeypatch.setattr(launch, "native_bf16", lambda accelerator: True)
    assert resolve_precision("auto", {}) == "bf16-mixed"


def test_a_cpu_run_at_avx2_kernels_is_not_native_bf16(monkeypatch):
    """ATEN_CPU_CAPABILITY=avx2 on an AVX512-BF16 machine (how the slower CPU kind is reproduced):
    the CPU flags still say bf16, the kernel level torch runs at does not."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert launch.native_bf16("cpu")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not launch.native_bf16("cpu")


def test_precision_conflict_names_both_settings():
    with pytest.raises(LdmError, match=r"train.precision=bf16-mixed conflicts with accelerate's mixed_precision=fp16"):
        resolve_precision("bf16-mixed", {"ACCELERATE_MIXED_PRECISION": "fp16"})
    with pytest.raises(LdmError, match="ACCELERATE_MIXED_PRECISION"):
        resolve_precision(None, {"ACCELERATE_MIXED_PRECISION": "fp8"})


def test_processes_come_from_a_torchrun_style_launch():
    cfg = TrainConfig()
    assert resolve_processes(cfg, {}) == {"devices": "auto", "num_nodes": 1, "strategy": "auto"}
    env = {"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    assert resolve_processes(cfg, env) == {"devices": 2, "num_nodes": 2, "strategy": "ddp"}


def test_fresh_run_refuses_to_overwrite_and_resume_finds_last(tmp_path):
    cfg = RunConfig(stage="autoencoder", run_dir=str(tmp_path), data=DataConfig(source="x"))
    assert resolve_checkpoint(cfg) is None
    cfg.checkpoint_dir.mkdir(parents=True)
    torch.save({"global_step": 0}, cfg.checkpoint_dir / "last.ckpt")  # a readable checkpoint
    with pytest.raises(LdmError, match="pass --resume"):
        resolve_checkpoint(cfg)
    cfg.train.ckpt_path = "last"
    assert resolve_checkpoint(cfg) == str(cfg.checkpoint_dir / "last.ckpt")
    cfg.train.ckpt_path = str(tmp_path / "nope.ckpt")
    with pytest.raises(LdmError, match="checkpoint not found"):
        resolve_checkpoint(cfg)


def test_a_checkpoint_without_a_run_record_is_refused():
    """Every checkpoint `ldm train` writes carries its run record: without one nothing says it is this run."""
    config = {"train": {"lr": 1e-4}}
    with pytest.raises(LdmError, match="holds no run record"):
        check_resume(None, config, "data", processes=1)
    assert check_resume({"config": config, "data": "data", "processes": 1}, config, "data", processes=1) == {}
