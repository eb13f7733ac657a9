"""A WebUI extension for `beside_a1111.py` only (copied into `extensions/` for a run, removed after).

Like `a1111_probe`, but for runs beside other extensions, where one generation has several images and an image
several sub-prompts (Regional Prompter's Latent mode turns regions into `AND` sub-prompts): it records the
whole conditioning the sampler gets at its first step, splits it per image and sub-prompt as the WebUI stacked
it (image after image, each image's `AND` sub-prompts in order), and compares every cond with the WebUI's own
encode of the text it encoded (`p.prompts`, markers already removed). Spec `$FTF_BESIDE_SPEC`:
`{"name", "images": [[[item text, alone text], ...] per image]}`: each item's rows (found in whichever
sub-prompt holds it) must equal its encode alone, and every other row its sub-prompt's plain encode.
Result: `$FTF_BESIDE_OUT/<name>.json`, with what Follow the Flow's state saw (for diagnosis).
"""

import json
import os
from pathlib import Path

import torch
from modules import devices, prompt_parser, script_callbacks, scripts, shared

RECORDED = {}


def record(params) -> None:
    if params.sampling_step == 0 and "cond" not in RECORDED:
        cond = params.text_cond
        RECORDED["cond"] = (
            (cond if isinstance(cond, torch.Tensor) else cond["crossattn"]).detach().float().cpu().clone()
        )


script_callbacks.on_cfg_denoiser(record)


def encode(p, text: str) -> torch.Tensor:
    with devices.autocast(), torch.no_grad():
        cond = shared.sd_model.get_learned_conditioning(
            prompt_parser.SdConditioning([text], width=p.width, height=p.height)
        )
    return cond[0].float().cpu()


def tokens(text: str) -> list[int]:
    chunks, _ = shared.sd_model.cond_stage_model.tokenize_line(text)
    return [token for chunk in chunks for token in chunk.tokens]


def find_rows(plain: str, alone: str):
    """Rows of the item's tokens in `plain` (first occurrence) and in its encode alone, or None."""
    prompt, own = tokens(plain), tokens(alone)
    end = own.index(shared.sd_model.cond_stage_model.id_end, 1)
    wanted = own[1:end]
    for start in range(len(prompt) - len(wanted) + 1):
        if prompt[start : start + len(wanted)] == wanted:
            return list(range(start, start + len(wanted))), list(range(1, end))
    return None


class BesideProbe(scripts.Script):
    def title(self):
        return "Follow the Flow beside probe"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        RECORDED.clear()

    def postprocess_batch(self, p, *args, **kwargs):
        spec_path = os.environ.get("FTF_BESIDE_SPEC")
        if not spec_path or not Path(spec_path).exists():
            return
        spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
        state = getattr(p, "follow_the_flow_state", None)
        result = {
            "name": spec["name"],
            "prompts": list(p.prompts),
            "all_prompts": list(p.all_prompts),
            "ftf_state": None
            if state is None
            else {"skip_reason": state.skip_reason, "marked": state.marked, "patched": state.patched},
            "alwayson_order": [type(s).__module__ + ":" + s.title() for s in p.scripts.alwayson_scripts]
            if getattr(p, "scripts", None)
            else [],
        }
        try:
            cond = RECORDED["cond"]
            result["cond_shape"] = list(cond.shape)
            images, flat = [], 0
            for b, wanted in enumerate(spec["images"]):
                # the sub-prompt texts of this image, as the WebUI split them (`AND`), in order
                indexes, flat_list, _ = prompt_parser.get_multicond_prompt_list([p.prompts[b]])
                sub_texts = [flat_list[index] for index, _weight in indexes[0]]
                own = {"subprompts": sub_texts, "items": [], "max_diff": 0.0, "others_equal": True, "changed": False}
                expected = {k: [] for k in range(len(sub_texts))}
                for item, alone_text in wanted:
                    alone = encode(p, alone_text)
                    for k, text in enumerate(sub_texts):
                        found = find_rows(text, alone_text)
                        if found:
                            rows, alone_rows = found
                            diff = float((cond[flat + k][rows] - alone[alone_rows]).abs().max())
                            own["max_diff"] = max(own["max_diff"], diff)
                            own["items"].append({"item": item, "subprompt": k, "rows": rows, "diff": diff})
                            expected[k] += rows
                            break
                    else:
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
        except Exception as error:
            import traceback

            result["error"] = f"{type(error).__name__}: {error}"
            result["traceback"] = traceback.format_exc()
        out = Path(os.environ["FTF_BESIDE_OUT"])
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{spec['name']}.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
