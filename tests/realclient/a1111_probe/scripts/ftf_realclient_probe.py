"""A WebUI extension for the real-client suite only (`host_a1111.py` copies it into `extensions/` for a run).

It records the conditioning the sampler receives at its first step (`on_cfg_denoiser`: after every script
patched it), and after the batch compares it with the WebUI's own encodes (`get_learned_conditioning`, token
positions from `tokenize_line`), as the spec file `$FTF_PROBE_SPEC` asks:
`{"name", "plain", "negative", "items": [[item text, alone text], ...]}`. The result goes to
`$FTF_PROBE_OUT/<name>.json`: `max_diff` (patched rows against the item alone), `others_equal`,
`negative_equal`, `rows`. Without a spec file it does nothing.
"""

import json
import os
from pathlib import Path

import torch
from modules import devices, prompt_parser, script_callbacks, scripts, shared

RECORDED = {}


def record(params) -> None:
    if params.sampling_step == 0 and "cond" not in RECORDED:
        RECORDED["cond"] = params.text_cond[0].detach().float().cpu().clone()
        RECORDED["uncond"] = params.text_uncond[0].detach().float().cpu().clone()


script_callbacks.on_cfg_denoiser(record)


def encode(p, text: str) -> torch.Tensor:
    with devices.autocast(), torch.no_grad():
        cond = shared.sd_model.get_learned_conditioning(
            prompt_parser.SdConditioning([text], width=p.width, height=p.height)
        )
    return cond[0].float().cpu()


def tokens(text: str) -> list[int]:
    """The text's token ids, chunk after chunk, 77 rows a chunk (start, 75 tokens, end)."""
    chunks, _ = shared.sd_model.cond_stage_model.tokenize_line(text)
    return [token for chunk in chunks for token in chunk.tokens]


def item_rows(plain: str, alone: str) -> tuple[list[int], list[int]]:
    """Rows of the item's tokens in the prompt (first occurrence) and in its encode alone."""
    prompt, own = tokens(plain), tokens(alone)
    end = own.index(shared.sd_model.cond_stage_model.id_end, 1)
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
            cond, uncond = RECORDED["cond"], RECORDED["uncond"]
            original = encode(p, spec["plain"])
            expected, worst = [], 0.0
            for _item, alone_text in spec["items"]:
                rows, alone_rows = item_rows(spec["plain"], alone_text)
                alone = encode(p, alone_text)
                worst = max(worst, float((cond[rows] - alone[alone_rows]).abs().max()))
                expected += rows
            others = [row for row in range(cond.shape[0]) if row not in expected]
            result.update(
                max_diff=worst,
                rows=len(expected),
                total_rows=cond.shape[0],
                shape_equal=cond.shape == original.shape,
                others_equal=cond.shape == original.shape and torch.equal(cond[others], original[others]),
                negative_equal=torch.equal(uncond, encode(p, spec["negative"])),
                changed=cond.shape != original.shape or not torch.equal(cond, original),
            )
        except Exception as error:  # reported to the suite as a failed row
            result["error"] = f"{type(error).__name__}: {error}"
        out = Path(os.environ["FTF_PROBE_OUT"])
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{spec['name']}.json").write_text(json.dumps(result), encoding="utf-8")
