"""A WebUI extension for the real-client suite only (`host_a1111.py` copies it into `extensions/` for a run).

It records the conditioning the sampler receives at its first step (`on_cfg_denoiser`: after every script
patched it), and after the batch compares it with the WebUI's own encodes (`get_learned_conditioning`, token
positions from `tokenize_line`), as the spec file `$FTF_PROBE_SPEC` asks:
`{"name", "plain", "negative", "items": [[item text, alone text], ...]}`. The result goes to
`$FTF_PROBE_OUT/<name>.json`: `max_diff` (patched rows against the item alone), `scale` (the largest
|value| of those rows), `others_equal`,
`negative_equal`, `rows`; for SDXL also `max_diff_columns` (CLIP-L's and CLIP-G's columns apart) and
`vector_equal` (the pooled CLIP-G vector with the size embeddings, against the plain prompt's); `networks`: the
loaded LoRAs and how many modules each matched. Without a spec file it does nothing.
"""

import json
import os
from pathlib import Path

import torch
from modules import devices, prompt_parser, script_callbacks, scripts, shared

RECORDED = {}


def first(cond, index: int = 0) -> dict:
    """Entry `index` of a batch of conditioning as `{"crossattn": rows, "vector": pooled or None}` (SDXL's is a
    dict of both, SD 1.x / 2.x's the rows alone)."""
    if isinstance(cond, dict):
        return {"crossattn": cond["crossattn"][index], "vector": cond["vector"][index]}
    return {"crossattn": cond[index], "vector": None}


def record(params) -> None:
    if params.sampling_step == 0 and "cond" not in RECORDED:
        for name, cond in (("cond", params.text_cond), ("uncond", params.text_uncond)):
            entry = first(cond)
            RECORDED[name] = {k: None if v is None else v.detach().float().cpu().clone() for k, v in entry.items()}


script_callbacks.on_cfg_denoiser(record)


def encode(p, text: str) -> dict:
    with devices.autocast(), torch.no_grad():
        cond = shared.sd_model.get_learned_conditioning(
            prompt_parser.SdConditioning([text], width=p.width, height=p.height)
        )
    return {k: None if v is None else v.float().cpu() for k, v in first(cond).items()}


def engine():
    """The WebUI's text encoder that lays lines out (SDXL: the conditioner's first embedder, CLIP-L)."""
    model = shared.sd_model.cond_stage_model
    if hasattr(model, "tokenize_line"):
        return model
    return next(embedder for embedder in model.embedders if hasattr(embedder, "tokenize_line"))


def tokens(text: str) -> list[int]:
    """The text's token ids, chunk after chunk, 77 rows a chunk (start, 75 tokens, end)."""
    chunks, _ = engine().tokenize_line(text)
    return [token for chunk in chunks for token in chunk.tokens]


def item_rows(plain: str, alone: str) -> tuple[list[int], list[int]]:
    """Rows of the item's tokens in the prompt (first occurrence) and in its encode alone."""
    prompt, own = tokens(plain), tokens(alone)
    end = own.index(engine().id_end, 1)
    wanted = own[1:end]
    for start in range(len(prompt) - len(wanted) + 1):
        if prompt[start : start + len(wanted)] == wanted:
            return list(range(start, start + len(wanted))), list(range(1, end))
    raise ValueError(f"{alone!r} not found in {plain!r}")


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
        result = {"name": spec["name"]}
        try:
            recorded, uncond = RECORDED["cond"], RECORDED["uncond"]
            cond, plain = recorded["crossattn"], encode(p, spec["plain"])
            original = plain["crossattn"]
            split = 768 if plain["vector"] is not None else cond.shape[1]  # SDXL: CLIP-L's columns, then CLIP-G's
            expected, worst, scale, columns = [], 0.0, 0.0, [0.0, 0.0]
            for _item, alone_text in spec["items"]:
                rows, alone_rows = item_rows(spec["plain"], alone_text)
                alone = encode(p, alone_text)["crossattn"][alone_rows]
                difference = (cond[rows] - alone).abs()
                scale = max(scale, float(alone.abs().max()))
                worst = max(worst, float(difference.max()))
                columns = [max(columns[0], float(difference[:, :split].max())), columns[1]]
                if split < cond.shape[1]:
                    columns[1] = max(columns[1], float(difference[:, split:].max()))
                expected += rows
            others = [row for row in range(cond.shape[0]) if row not in expected]
            negative = encode(p, spec["negative"])
            result.update(
                max_diff=worst,
                scale=scale,
                rows=len(expected),
                total_rows=cond.shape[0],
                shape_equal=cond.shape == original.shape,
                others_equal=cond.shape == original.shape and torch.equal(cond[others], original[others]),
                negative_equal=all(_same(uncond[k], negative[k]) for k in ("crossattn", "vector")),
                changed=cond.shape != original.shape or not torch.equal(cond, original),
            )
            if plain["vector"] is not None:
                result.update(max_diff_columns=columns, vector_equal=_same(recorded["vector"], plain["vector"]))
            result["networks"] = _networks()
        except Exception as error:  # reported to the suite as a failed row
            result["error"] = f"{type(error).__name__}: {error}"
        out = Path(os.environ["FTF_PROBE_OUT"])
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{spec['name']}.json").write_text(json.dumps(result), encoding="utf-8")


def _same(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))


def _networks() -> list[list]:
    """`[name, matched modules]` of each LoRA the Lora extension has loaded (empty without it)."""
    try:
        import networks
    except ImportError:
        return []
    return [[network.name, len(network.modules)] for network in networks.loaded_networks]
