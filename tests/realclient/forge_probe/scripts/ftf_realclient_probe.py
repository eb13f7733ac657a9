"""A Forge extension for the real-client suite only (`host_forge.py` copies it into `extensions/` for a run).

It records the conditioning the sampler receives at its first step (`on_cfg_denoiser`: after every script
patched it), and after the batch compares it with Forge's own encodes (`get_learned_conditioning`, token
positions from its text engine's `tokenize_line`), as the spec file `$FTF_PROBE_SPEC` asks:
`{"name", "plain", "negative", "items": [[item text, alone text], ...]}`. The result goes to
`$FTF_PROBE_OUT/<name>.json`: `max_diff` (patched rows against the item alone), `scale` (the largest |value|
in the item's own rows), `others_equal`, `negative_equal`, `vector_equal` (the pooled vector, where the model has
one), `rows`, and `model` (the engine class Forge chose and the repository it guessed). Without a spec file it
does nothing. Rows are laid out by the model's first CLIP engine (SDXL's `crossattn` is CLIP-L and CLIP-G side by
side, so one row index covers both), or by its T5 engine where it has no CLIP rows (Flux, Chroma: no start
token). SD 3.5 (CLIP rows, then T5 rows) is not covered.
"""

import json
import os
from pathlib import Path

import torch
from modules import prompt_parser, script_callbacks, scripts, shared

RECORDED = {}
ENCODED = {}  # text -> Forge's conditioning of it, for one batch


def crossattn(cond) -> torch.Tensor:
    """The text rows of a conditioning (SDXL's is a dict with `crossattn` and `vector`)."""
    return cond["crossattn"] if isinstance(cond, dict) else cond


def vector(cond) -> torch.Tensor | None:
    """The pooled vector of a conditioning that has one (SDXL, Flux), else None."""
    return cond["vector"] if isinstance(cond, dict) and "vector" in cond else None


def record(params) -> None:
    if params.sampling_step == 0 and "cond" not in RECORDED:
        RECORDED["cond"] = crossattn(params.text_cond)[0].detach().float().cpu().clone()
        RECORDED["uncond"] = crossattn(params.text_uncond)[0].detach().float().cpu().clone()
        pooled = vector(params.text_cond)
        RECORDED["vector"] = None if pooled is None else pooled[0].detach().float().cpu().clone()


script_callbacks.on_cfg_denoiser(record)


def encode(p, text: str, pooled: bool = False) -> torch.Tensor | None:
    """Forge's encode of `text` alone: its rows, or (`pooled`) its pooled vector (None without one). Each text is
    encoded once per batch (a T5 encode takes a minute on a CPU)."""
    if text not in ENCODED:
        texts = prompt_parser.SdConditioning([text], width=p.width, height=p.height)
        ENCODED[text] = shared.sd_model.get_learned_conditioning(texts)
    cond = ENCODED[text]
    if pooled:
        return None if vector(cond) is None else vector(cond)[0].float().cpu()
    return crossattn(cond)[0].float().cpu()


def engine():
    """Forge's text engine whose tokens lay out the rows (SDXL: CLIP-L's, the same as CLIP-G's; Flux: T5's)."""
    model = shared.sd_model
    if hasattr(model, "text_processing_engine_t5") and not hasattr(model, "text_processing_engine_g"):
        return model.text_processing_engine_t5
    return getattr(model, "text_processing_engine", None) or model.text_processing_engine_l


def tokens(text: str) -> list[int]:
    """The text's token ids, chunk after chunk, 77 rows a chunk (start, 75 tokens, end)."""
    chunks, _ = engine().tokenize_line(text)
    return [token for chunk in chunks for token in chunk.tokens]


def item_rows(plain: str, alone: str) -> tuple[list[int], list[int]]:
    """Rows of the item's tokens in the prompt (first occurrence) and in its encode alone."""
    prompt, own = tokens(plain), tokens(alone)
    first = 1 if own[0] == getattr(engine(), "id_start", None) else 0  # CLIP's start token; T5 has none
    end = own.index(engine().id_end, first)
    wanted = own[first:end]
    for start in range(len(prompt) - len(wanted) + 1):
        if prompt[start : start + len(wanted)] == wanted:
            return list(range(start, start + len(wanted))), list(range(first, end))
    raise ValueError(f"{alone!r} not found in {plain!r}")


def model_name() -> str:
    model = shared.sd_model
    repo = getattr(getattr(model, "model_config", None), "huggingface_repo", "?")
    return f"{type(model).__name__} ({repo})"


class Probe(scripts.Script):
    def title(self):
        return "Follow the Flow real-client probe"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        RECORDED.clear()

    def postprocess_batch(self, p, *args, **kwargs):
        spec_path = os.environ.get("FTF_PROBE_SPEC")
        if not spec_path or not Path(spec_path).exists():
            return
        spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
        result = {"name": spec["name"], "model": model_name()}
        ENCODED.clear()
        try:
            cond, uncond = RECORDED["cond"], RECORDED["uncond"]
            original = encode(p, spec["plain"])
            expected, worst, scale = [], 0.0, 0.0
            for _item, alone_text in spec["items"]:
                alone = encode(p, alone_text)
                rows, alone_rows = item_rows(spec["plain"], alone_text)
                worst = max(worst, float((cond[rows] - alone[alone_rows]).abs().max()))
                scale = max(scale, float(alone[alone_rows].abs().max()))
                expected += rows
            others = [row for row in range(cond.shape[0]) if row not in expected]
            result.update(
                max_diff=worst,
                scale=scale,
                rows=len(expected),
                total_rows=cond.shape[0],
                shape_equal=cond.shape == original.shape,
                others_equal=cond.shape == original.shape and torch.equal(cond[others], original[others]),
                negative_equal=torch.equal(uncond, encode(p, spec["negative"])),
                vector_equal=None
                if RECORDED["vector"] is None
                else torch.equal(RECORDED["vector"], encode(p, spec["plain"], True)),
                changed=cond.shape != original.shape or not torch.equal(cond, original),
            )
        except Exception as error:  # reported to the suite as a failed row
            result["error"] = f"{type(error).__name__}: {error}"
        out = Path(os.environ["FTF_PROBE_OUT"])
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{spec['name']}.json").write_text(json.dumps(result), encoding="utf-8")
