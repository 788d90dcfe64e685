"""The benchmarks package (`python -m benchmarks NAME`): every benchmark builds its options from the
harness's, the banner names what a figure depends on, and a figure goes through JSON to the
comparison table unchanged (benchmarks/compare.py reads results, it does not scrape printed text)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

from benchmarks import BENCHMARKS, compare
from benchmarks.__main__ import main as run_benchmark
from benchmarks.harness import banner, build_parser, machine, parse, read_results, timings, write_results


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_has_the_harness_options_and_a_run(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(module.run) and module.__doc__.strip()
    options = build_parser(name, module).format_help()
    assert "--threads" in options and "--json" in options


def test_options_may_come_between_positionals_and_overrides():
    module = importlib.import_module("benchmarks.stage2_variants")
    args = parse(build_parser("stage2-variants", module), ["Q", "A", "2.5", "--plain", "train.lr=1e-3", "ema=null"])
    assert args.plain and args.minutes == 2.5 and args.overrides == ["train.lr=1e-3", "ema=null"]
    # at the same steps instead of the same minutes, judged as the quickstart judges (16 seeds, g4)
    line = ["Q", "A", "0", "--steps", "2119", "--seeds", "16", "--guidance", "4", "unet.addition_embed_type=text"]
    args = parse(build_parser("stage2-variants", module), line)
    assert (args.steps, args.seeds, args.guidance) == (2119, 16, [4.0])
    assert args.overrides == ["unet.addition_embed_type=text"]


def test_the_banner_names_the_cpu_its_flags_torch_and_the_threads():
    torch.set_num_threads(2)
    info = machine()
    text = banner(info)
    assert info["cpu"] in text and f"torch {torch.__version__}" in text and "2 torch threads" in text
    assert set(info["cpu_flags"]) <= {"avx512f", "avx512_bf16", "amx_bf16", "avx2"}


def test_timings_time_each_call_after_the_warmup():
    calls = []
    times = timings(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and len(times) == 3 and all(t >= 0 for t in times)


def test_a_benchmark_writes_its_figures_as_json(tmp_path, capsys):
    path = tmp_path / "generate.json"
    run_benchmark(["generate", "--batch", "1", "--steps", "1", "--repeats", "1", "--threads", "1", "--json", str(path)])
    record = json.loads(path.read_text())
    assert record["benchmark"] == "generate" and record["machine"]["threads"] == 1
    figures = read_results(path)
    assert set(figures["images_per_second"]) == {"ldm", "diffusers"} and figures["max_abs_difference"] < 1e-3
    assert "speed-up:" in capsys.readouterr().out


def test_compare_reads_the_figures_from_the_json_results(monkeypatch):
    def fake_run(command, **kwargs):  # the benchmark's process: it writes its results where --json says
        figures = {"images_per_second": {"ldm": 6.0, "diffusers": 4.0}}
        write_results(Path(command[command.index("--json") + 1]), "generate", command, {}, figures, 1.0)
        return type("Done", (), {"returncode": 0, "stdout": "", "stderr": ""})()

    monkeypatch.setattr(compare.subprocess, "run", fake_run)
    result = compare.measure(compare.COMPARISONS[0], ["--repeats", "3"], threads=2, timeout=60)
    assert (result["ours"], result["baseline"]) == (6.0, 4.0)
