"""The GPU benchmark script keeps working: run on the tiny pipeline on the CPU."""

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_generation.py"


def test_gpu_benchmark_runs_on_the_tiny_pipeline(capsys):
    spec = importlib.util.spec_from_file_location("gpu_generation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = module.main(["--tiny", "--device", "cpu", "--repeats", "1"])
    finally:
        torch.set_num_threads(threads)
    assert set(times) == {"run", "repeated", "generation"}
    assert all(value > 0 for value in times.values())
    assert times["repeated"] < times["run"]  # the cache works
    assert "share of generation" in capsys.readouterr().out
