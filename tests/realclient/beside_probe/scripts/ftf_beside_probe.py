"""A WebUI extension for `beside_a1111.py` and `beside_forge.py` only (copied into `extensions/` for a run, removed
after).

Like `a1111_probe`, but for runs beside other extensions and features, where one request has several sampling passes
(the hires pass, ADetailer's inpaint passes, one per X/Y/Z cell or prompt line), a pass several images and an image
several sub-prompts (Regional Prompter's Latent mode turns regions into `AND` sub-prompts). At the first step of
EVERY pass (`on_cfg_denoiser`, a global callback, so it also sees passes whose own script list leaves this probe
out, as ADetailer's does) it takes the whole conditioning the sampler gets, splits it per image and sub-prompt as
the WebUI stacked it (image after image, each image's `AND` sub-prompts in order), and compares every cond with the
WebUI's own encode of the text that pass encoded (`p.prompts`, or `p.hr_prompts` in the hires pass; markers already
removed), after ControlNet's mark row where it put one. Spec `$FTF_BESIDE_SPEC`: `{"name", "images": [[[item text,
alone text], ...] per image]}` (the same items in every pass; an item not found is an error), or `{"name", "items":
[[item text, alone text], ...]}` (each image gets the items its sub-prompts contain). Each item's rows (in whichever
sub-prompt holds it) must equal its encode alone, every other row its sub-prompt's plain encode. Result:
`$FTF_BESIDE_OUT/<name>.json`, rewritten after each pass: `passes` (in order) and, at the top, the first pass's
fields, with what Follow the Flow's state saw (for diagnosis).
"""

import json
import os
from pathlib import Path

import torch
from modules import devices, prompt_parser, script_callbacks, shared

RECORDING = {"name": None, "passes": []}


def encode(p, text: str) -> torch.Tensor:
    with devices.autocast(), torch.no_grad():
        cond = shared.sd_model.get_learned_conditioning(
            prompt_parser.SdConditioning([text], width=p.width, height=p.height)
        )
    return (cond["crossattn"] if isinstance(cond, dict) else cond)[0].float().cpu()


def text_encoder():
    """The encoder whose `tokenize_line` lays the rows out: A1111's (SDXL: its CLIP-L embedder), or Forge's CLIP text
    engine (SDXL: CLIP-L's), whose `cond_stage_model` is None."""
    model = shared.sd_model
    for name in ("text_processing_engine", "text_processing_engine_l"):  # Forge
        if getattr(model, name, None) is not None:
            return getattr(model, name)
    return model.conditioner.embedders[0] if getattr(model, "is_sdxl", False) else model.cond_stage_model


def tokens(text: str) -> list[int]:
    chunks, _ = text_encoder().tokenize_line(text)
    return [token for chunk in chunks for token in chunk.tokens]


def find_rows(plain: str, alone: str):
    """Rows of the item's tokens in `plain` (first occurrence) and in its encode alone, or None."""
    prompt, own = tokens(plain), tokens(alone)
    end = own.index(text_encoder().id_end, 1)
    wanted = own[1:end]
    for start in range(len(prompt) - len(wanted) + 1):
        if prompt[start : start + len(wanted)] == wanted:
            return list(range(start, start + len(wanted))), list(range(1, end))
    return None


def pass_kind(p) -> str:
    if getattr(p, "is_hr_pass", False):
        return "hires"
    if getattr(p, "_ad_inner", False):
        return "adetailer"
    return "img2img" if hasattr(p, "init_images") else "txt2img"


def compare(p, spec: dict, cond: torch.Tensor) -> dict:
    """One pass: every image's sub-prompts against the WebUI's encodes."""
    hires = getattr(p, "is_hr_pass", False)
    prompts = list(p.hr_prompts if hires else p.prompts)
    state = getattr(p, "follow_the_flow_state", None)
    result = {
        "kind": pass_kind(p),
        "prompts": prompts,
        "all_prompts": list(getattr(p, "all_prompts", None) or []),
        "size": [p.width, p.height],
        "ftf_state": None
        if state is None
        else {"skip_reason": state.skip_reason, "marked": state.marked, "patched": state.patched},
        "cond_shape": list(cond.shape),
    }
    images, flat = [], 0
    for b, prompt in enumerate(prompts):
        # the sub-prompt texts of this image, as the WebUI split them (`AND`), in order
        indexes, flat_list, _ = prompt_parser.get_multicond_prompt_list([prompt])
        sub_texts = [flat_list[index] for index, _weight in indexes[0]]
        own = {
            "subprompts": sub_texts,
            "items": [],
            "max_diff": 0.0,
            "scale": 0.0,
            "others_equal": True,
            "changed": False,
        }
        expected = {k: [] for k in range(len(sub_texts))}
        strict = "images" in spec
        for item, alone_text in spec["images"][b] if strict else spec.get("items", []):
            alone = None
            for k, text in enumerate(sub_texts):
                found = find_rows(text, alone_text)
                if found:
                    alone = encode(p, alone_text) if alone is None else alone
                    rows, alone_rows = found
                    diff = float((cond[flat + k][rows] - alone[alone_rows]).abs().max())
                    own["max_diff"] = max(own["max_diff"], diff)
                    own["scale"] = max(own["scale"], float(alone[alone_rows].abs().max()))
                    own["items"].append({"item": item, "subprompt": k, "rows": rows, "diff": diff})
                    expected[k] += rows
                    break
            else:
                if strict:
                    own["items"].append({"item": item, "subprompt": None, "error": "not found in any sub-prompt"})
                    own["max_diff"] = float("inf")
        for k, text in enumerate(sub_texts):
            original = encode(p, text)
            got = cond[flat + k]
            if got.shape != original.shape:
                own["others_equal"] = False
                own["changed"] = True
                continue
            others = [row for row in range(got.shape[0]) if row not in expected[k]]
            own["others_equal"] = own["others_equal"] and torch.equal(got[others], original[others])
            own["changed"] = own["changed"] or not torch.equal(got, original)
        flat += len(sub_texts)
        images.append(own)
    result["images"] = images
    result["conds_used"] = flat
    return result


def record(params) -> None:
    denoiser = getattr(params, "denoiser", None)
    p = getattr(denoiser, "p", None)
    spec_path = os.environ.get("FTF_BESIDE_SPEC")
    if p is None or getattr(denoiser, "step", None) != 0 or not spec_path or not Path(spec_path).exists():
        return
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    if RECORDING["name"] != spec["name"]:
        RECORDING.update(name=spec["name"], passes=[])
    cond = params.text_cond
    cond = (cond if isinstance(cond, torch.Tensor) else cond["crossattn"]).detach().float().cpu().clone()
    # sd-webui-controlnet puts a row of +-1024 in front of every cond (its UNet hook takes it off): not the prompt's
    mark = cond.shape[1] % 77 == 1 and bool(((cond[:, 0].abs() - 1024).abs().mean(dim=-1) < 1e-3).all())
    try:
        found = compare(p, spec, cond[:, 1:] if mark else cond)
        found["controlnet_mark_row"] = mark
    except Exception as error:
        import traceback

        found = {"kind": pass_kind(p), "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    RECORDING["passes"].append(found)
    first = RECORDING["passes"][0]
    result = {"name": spec["name"], **first, "passes": RECORDING["passes"]}
    out = Path(os.environ["FTF_BESIDE_OUT"])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{spec['name']}.json").write_text(json.dumps(result, indent=1), encoding="utf-8")


script_callbacks.on_cfg_denoiser(record)
