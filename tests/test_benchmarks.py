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


def test_gpu_benchmark_with_cuda_on_a_cpu_only_torch_says_so(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    spec = importlib.util.spec_from_file_location("gpu_generation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        module.main(["--device", "cuda"])
    except SystemExit as exit_info:
        assert exit_info.code == 2
    else:
        raise AssertionError("no error")
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "`--device` is 'cuda'" in err and "CPU-only" in err
