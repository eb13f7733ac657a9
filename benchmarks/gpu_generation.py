"""What flowcore adds to a whole generation: `FlowPatcher.run` next to a 20-step SD 1.5-size generation.

Random weights at SD 1.5's real sizes (UNet 860M, text encoder 123M, from the bundled configs), so the
timing is real while the images are noise. Budget (issue 3): run <= 1% of the generation. Meant for a
GPU (`--device cuda`, fp16, 512x512, 20 steps); `--tiny` runs the same code on the tiny test pipeline on
a CPU (64x64, 2 steps), which is how the tests keep this script working.

    python benchmarks/gpu_generation.py --device cuda
    python benchmarks/gpu_generation.py --tiny
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from flowcore import FlowOptions
from flowcore.errors import FlowcoreError
from flowcore.models.devices import resolve_device
from flowcore.models.pipelines import generate, patcher_for_pipeline

PROMPT = "a crosswalk next to a bus station with a standing zebra, a red umbrella, a yellow taxi and an old lamp post"


def sd15_size_pipeline(device: str, dtype: torch.dtype):
    """An SD 1.5-size StableDiffusionPipeline with random weights, built from the bundled configs."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from flowcore.models.model_configs import write_config_folder
    from flowcore.testing import pipeline_tokenizer

    folder = write_config_folder("sd15")
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
        tokenizer=pipeline_tokenizer(),
        unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
        scheduler=DDIMScheduler.from_config(DDIMScheduler.load_config(folder / "scheduler")),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(device)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


def timed(function, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    function()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(pipe, device: str, steps: int, size: int, repeats: int) -> dict[str, float]:
    """Median seconds of a cold `run` (empty caches), a repeated `run`, and a generation."""
    patcher = patcher_for_pipeline(pipe, FlowOptions())
    result = patcher.run(PROMPT)  # warm-up: spaCy, kernels

    def cold() -> None:
        patcher.clear_cache()
        patcher.run(PROMPT)

    def image() -> None:
        generate(pipe, result, steps=steps, width=size, height=size, encoder=patcher.encoder, progress=False)

    image()  # warm-up
    return {
        "run": statistics.median(timed(cold, device) for _ in range(repeats)),
        "repeated": statistics.median(timed(lambda: patcher.run(PROMPT), device) for _ in range(repeats)),
        "generation": statistics.median(timed(image, device) for _ in range(max(1, repeats // 3))),
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="the tiny test pipeline (CPU check of this script)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--size", type=int)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    try:
        args.device = resolve_device(args.device)
    except FlowcoreError as error:  # `--device cuda` on a CPU-only PyTorch: one line, status 2
        parser.exit(2, f"{parser.prog}: error: {error}\n".replace("`device`", "`--device`"))

    if args.tiny:
        from flowcore.testing import tiny_sd15_pipeline

        pipe, steps, size = tiny_sd15_pipeline().to(args.device), args.steps or 2, args.size or 64
    else:
        dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
        pipe, steps, size = sd15_size_pipeline(args.device, dtype), args.steps or 20, args.size or 512
    times = measure(pipe, args.device, steps, size, args.repeats)
    print(f"device {args.device}, {'tiny' if args.tiny else 'SD 1.5-size'} pipeline, {steps} steps, {size}x{size}")
    print(f"{'what':<22} {'median ms':>10} {'share of generation':>20}")
    for name in ("run", "repeated", "generation"):
        print(f"{name:<22} {1000 * times[name]:>10.2f} {100 * times[name] / times['generation']:>19.2f}%")
    return times


if __name__ == "__main__":
    main()
