"""Random-weight checkpoints that the hosts (A1111, Forge, ComfyUI) load as the real thing.

    python3 tools/random_checkpoint.py --family sd15 --out DIR [--lora] [--seed N]

writes the files a host's loaders read, with the original key names and shapes, so that each host's own model
detection classifies them as that family:

| family | files | status |
|---|---|---|
| sd15 | `sd15-random.safetensors`: one file in the original (ldm) layout, fp16, 1143 keys, about 2.1 GB | done |
| sd2 | `sd2-random.safetensors`: SD 2.1 768-v (`v2-inference-v.yaml`), OpenCLIP-H, fp16, 1240 keys, 2.6 GB | done |
| sdxl | `sdxl-random.safetensors`: SDXL base (`sd_xl_base.yaml`), CLIP-L + OpenCLIP-G, fp16, 2515 keys, 6.9 GB | done |
| sd35, flux-dev, flux-schnell, chroma | split files: see `tools/checkpoints/dit.py` | done |
| lumina2, qwen-image, hidream | split files, full-size language model: see `tools/checkpoints/llm.py` | done |

The language-model families need `--tokenizer-source` (ComfyUI's `comfy/text_encoders/qwen25_tokenizer`: the
stand-in Gemma and Llama 3 tokenizers are built from it) and HiDream `--llama-config` (ComfyUI's
`comfy/text_encoders/llama_tokenizer/tokenizer_config.json`); they are written tensor by tensor (under a GB of
memory) and need 5-10 GB of disk a language model.

The layouts live in `tools/checkpoints/` (one module a model family, `common.py` for what they share). The noise
schedule's buffers hold the real values (scaled-linear betas, 0.00085..0.012, 1000 steps) in fp32. `--lora` also
writes `<family>-random-lora.safetensors`: a rank-4 LoRA in the kohya key format (`lora_te_...`, `lora_unet_...`)
on every text-encoder projection (SDXL: `lora_te1_`, `lora_te2_`) and the UNet's attention projections (SDXL: the
first block of each transformer), strong enough to change the text encoder's output visibly. Needs torch and
safetensors (the repository's `.venv` has both).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from checkpoints import dit, ldm, llm, sdxl

FAMILIES = ("sd15", "sd2", "sdxl", "sd35", "flux-dev", "flux-schnell", "chroma", "lumina2", "qwen-image", "hidream")
LLM_FAMILIES = ("lumina2", "qwen-image", "hidream")  # written by `llm.write_family` (tokenizer sources)
WRITERS: dict[str, Callable[[Path, int, bool], list[Path]]] = {  # family -> writer(out, seed, lora) -> files
    "sd15": ldm.write_sd15,
    "sd2": ldm.write_sd2,
    "sdxl": sdxl.write_sdxl,
    "sd35": dit.write_sd35,
    "flux-dev": dit.write_flux_dev,
    "flux-schnell": dit.write_flux_schnell,
    "chroma": dit.write_chroma,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a random-weight checkpoint in a family's original layout. Implemented: "
        f"{', '.join([*WRITERS, *LLM_FAMILIES])}; the other families exit with status 2 (not implemented yet).",
    )
    parser.add_argument("--family", required=True, choices=FAMILIES)
    parser.add_argument("--out", required=True, type=Path, help="folder to write the files into (created)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lora", action="store_true", help="also write a random LoRA (kohya key names)")
    parser.add_argument("--tokenizer-source", type=Path, help="lumina2/qwen-image/hidream: Qwen2's tokenizer folder")
    parser.add_argument("--llama-config", type=Path, help="hidream: Llama 3's tokenizer_config.json")
    args = parser.parse_args(argv)
    if args.family in LLM_FAMILIES:
        args.out.mkdir(parents=True, exist_ok=True)
        for path in llm.write_family(args.family, args.out, args.seed, args.tokenizer_source, args.llama_config):
            print(f"{path}: {path.stat().st_size / 1e9:.2f} GB")
        return 0
    if args.family not in WRITERS:
        print(f"random_checkpoint: --family {args.family} is not implemented yet (only: {', '.join(WRITERS)})")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for path in WRITERS[args.family](args.out, args.seed, args.lora):
        print(f"{path}: {path.stat().st_size / 1e9:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
