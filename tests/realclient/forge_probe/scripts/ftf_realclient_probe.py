"""A Forge extension for the real-client suite only (`host_forge.py` copies it into `extensions/` for a run).

It records the conditioning the sampler receives at its first step (`on_cfg_denoiser`: after every script
patched it), and after the batch compares it with Forge's own encodes (`get_learned_conditioning`, token
positions from its text engines' `tokenize_line`), as the spec file `$FTF_PROBE_SPEC` asks:
`{"name", "plain", "negative", "items": [[item text, alone text], ...]}`. The result goes to
`$FTF_PROBE_OUT/<name>.json`: `max_diff` (patched rows against the item alone), `scale` (the largest |value|
in the item's own rows), `parts` (the same two numbers per encoder's part of the rows: CLIP, or SD 3.5's CLIP-L
and CLIP-G columns and T5 rows), `others_equal`, `negative_equal`, `vector_equal` (the pooled vector, where the
model has one), `rows`, `encode_seconds` (each of its own encodes of a text), `model` (the engine class Forge
chose and the repository it guessed) and, with several items and a T5 engine, `t5_batch_noise` (see
`t5_batch_noise`). Without a spec file it compares nothing.

Rows are laid out per part: the model's first CLIP engine (SDXL's `crossattn` is CLIP-L and CLIP-G side by side,
so one row index covers both), then, where the model has one, its T5 engine (no start token), whose rows follow
the CLIP rows (SD 3.5) or are all of them (Flux, Chroma).

After every batch the recorded conditioning is written to `$FTF_PROBE_OUT/last-cond.safetensors` (the suite
compares runs with it). With `$FTF_PROBE_STOP` set, sampling stops once step 0's conditioning is recorded
(Forge's own interruption, `InterruptedException`, so the batch is decoded and finished as usual): for a
diffusion model that Forge builds deeper than the suite's random file (Flux, Chroma).

With `$FTF_PROBE_SHORT_CALIBRATION=N` (and `$FTF_PROBE_SUITE`, the suite's folder), the extension's core calibrates
on N of its built-in prompts spread over the file (`host_common.short_calibration`, the selection ComfyUI's checks
make), and every calibration it runs is timed: `$FTF_PROBE_OUT/calibrations.json` (see `shorten_calibration`).
"""

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import torch
from modules import prompt_parser, script_callbacks, scripts, sd_samplers_common, shared
from safetensors.torch import save_file

RECORDED = {}
ENCODED = {}  # (text, the settings an encode depends on) -> Forge's conditioning of it
TIMES = []  # seconds of each encode of this batch
CALIBRATION = {"shortened": None, "runs": []}  # (count, full count), and each calibration (`shorten_calibration`)
CLIP_WIDTHS = {"CLIP-L": (0, 768), "CLIP-G": (768, 2048)}  # SD 3.5's CLIP columns (then zeros up to T5's 4096)


def crossattn(cond) -> torch.Tensor:
    """The text rows of a conditioning (SDXL's is a dict with `crossattn` and `vector`)."""
    return cond["crossattn"] if isinstance(cond, dict) else cond


def vector(cond) -> torch.Tensor | None:
    """The pooled vector of a conditioning that has one (SDXL, SD 3.5, Flux), else None."""
    return cond["vector"] if isinstance(cond, dict) and "vector" in cond else None


def record(params) -> None:
    if params.sampling_step == 0 and "cond" not in RECORDED:
        RECORDED["cond"] = crossattn(params.text_cond)[0].detach().float().cpu().clone()
        uncond = params.text_uncond
        RECORDED["uncond"] = None if uncond is None else crossattn(uncond)[0].detach().float().cpu().clone()
        pooled = vector(params.text_cond)
        RECORDED["vector"] = None if pooled is None else pooled[0].detach().float().cpu().clone()
        if os.environ.get("FTF_PROBE_STOP"):
            raise sd_samplers_common.InterruptedException  # a BaseException: Forge's callback loop lets it through


script_callbacks.on_cfg_denoiser(record)


def suite_module(name: str):
    """A module of the suite (`$FTF_PROBE_SUITE/<name>.py`, standard library only), imported under a name of its own."""
    spec = importlib.util.spec_from_file_location(
        f"ftf_realclient_{name}", Path(os.environ["FTF_PROBE_SUITE"], name + ".py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def shorten_calibration() -> None:
    """Once (the first image; by then the extension has imported its core): the calibration module the extension's
    `FlowPatcher` uses gets `host_common.short_calibration`, and `FlowPatcher.calibrate` is timed. Each calibration is
    written to `$FTF_PROBE_OUT/calibrations.json` as it ends: the part's name, the prompts its progress listener was
    told (None: read from the disk cache, nothing measured) and its seconds, with the shortened and full counts."""
    if CALIBRATION["shortened"] or not os.environ.get("FTF_PROBE_SHORT_CALIBRATION"):
        return
    script = sys.modules["follow_the_flow_webui.script"]  # the extension's glue (scripts/follow_the_flow.py)
    patcher = sys.modules[script.FlowPatcher.__module__]
    count = int(os.environ["FTF_PROBE_SHORT_CALIBRATION"])
    CALIBRATION["shortened"] = suite_module("host_common").short_calibration(patcher.calibration, count)
    calibrate = patcher.FlowPatcher.calibrate

    def timed(self, *args, **kwargs):
        listener, totals = self.calibration_progress, []

        def progress(done: int, total: int) -> None:
            totals.append(total)
            if listener is not None:
                listener(done, total)

        self.calibration_progress = progress
        began = time.perf_counter()
        try:
            return calibrate(self, *args, **kwargs)
        finally:
            self.calibration_progress = listener
            seconds = round(time.perf_counter() - began, 1)
            prompts = totals[-1] if totals else None
            CALIBRATION["runs"].append({"part": self.encoder.name, "prompts": prompts, "seconds": seconds})
            out = Path(os.environ["FTF_PROBE_OUT"])
            out.mkdir(parents=True, exist_ok=True)
            (out / "calibrations.json").write_text(json.dumps(CALIBRATION), encoding="utf-8")

    patcher.FlowPatcher.calibrate = timed


def encode(p, text: str, pooled: bool = False) -> torch.Tensor | None:
    """Forge's encode of `text` alone: its rows, or (`pooled`) its pooled vector (None without one). Each text is
    encoded once per set of settings it depends on (a T5 encode takes tens of seconds on a CPU)."""
    settings = (
        shared.opts.emphasis,
        shared.opts.CLIP_stop_at_last_layers,
        getattr(shared.opts, "sd3_enable_t5", None),
        str(getattr(p, "extra_network_data", None)),
    )
    key = (text, settings)
    if key not in ENCODED:
        began = time.perf_counter()
        texts = prompt_parser.SdConditioning([text], width=p.width, height=p.height)
        ENCODED[key] = shared.sd_model.get_learned_conditioning(texts)
        TIMES.append(round(time.perf_counter() - began, 2))
    cond = ENCODED[key]
    if pooled:
        return None if vector(cond) is None else vector(cond)[0].float().cpu()
    return crossattn(cond)[0].float().cpu()


def engines() -> list:
    """Forge's text engines whose tokens lay out the rows, in row order: the first CLIP engine (SDXL, SD 3.5: CLIP-L's,
    the same as CLIP-G's), then T5 (SD 3.5, Flux, Chroma); Flux's CLIP-L gives the pooled vector only."""
    model = shared.sd_model
    t5 = getattr(model, "text_processing_engine_t5", None)
    if t5 is not None and not hasattr(model, "text_processing_engine_g"):
        return [t5]
    clip = getattr(model, "text_processing_engine", None) or model.text_processing_engine_l
    return [clip] if t5 is None else [clip, t5]


def tokens(engine, text: str) -> list[int]:
    """The text's token ids in one engine, chunk after chunk (CLIP: 77 rows a chunk, start, 75 tokens, end)."""
    chunks, _ = engine.tokenize_line(text)
    return [token for chunk in chunks for token in chunk.tokens]


def part_rows(plain: str, alone: str) -> list[tuple[str, list[int], list[int], slice]]:
    """Per part: its name, the rows of the item's tokens in the prompt (first occurrence), those in its encode alone,
    and the part's columns."""
    found, offset_plain, offset_alone = [], 0, 0
    listed = engines()
    for engine in listed:
        prompt, own = tokens(engine, plain), tokens(engine, alone)
        first = 1 if own[0] == getattr(engine, "id_start", None) else 0  # CLIP's start token; T5 has none
        end = own.index(engine.id_end, first)
        wanted = own[first:end]
        starts = [s for s in range(len(prompt) - len(wanted) + 1) if prompt[s : s + len(wanted)] == wanted]
        if not starts:
            raise ValueError(f"{alone!r} not found in {plain!r}")
        rows = [offset_plain + r for r in range(starts[0], starts[0] + len(wanted))]
        alone_rows = [offset_alone + r for r in range(first, end)]
        if engine is getattr(shared.sd_model, "text_processing_engine_t5", None):
            found.append(("T5", rows, alone_rows, slice(None)))
        elif len(listed) == 2:  # SD 3.5: CLIP-L and CLIP-G columns apart
            found += [(name, rows, alone_rows, slice(*cols)) for name, cols in CLIP_WIDTHS.items()]
        else:
            found.append(("CLIP", rows, alone_rows, slice(None)))
        offset_plain, offset_alone = offset_plain + len(prompt), offset_alone + len(own)
    return found


def t5_batch_noise(texts: list[str]) -> float:
    """How far Forge's own T5 encode of these texts in one batch (one per length, as the glue batches items) is
    from its encodes one by one: float32 rounding that depends on the batch's shape (CPU matrix kernels pick
    their blocking by it), measured here so the suite can tell it from a wrong patch."""
    engine = getattr(shared.sd_model, "text_processing_engine_t5", None)
    if engine is None or len(texts) < 2:
        return 0.0
    sequences = [tokens(engine, text) for text in texts]
    noise = 0.0
    with torch.no_grad():
        for length in sorted({len(ids) for ids in sequences}):
            group = [ids for ids in sequences if len(ids) == length]
            together = engine.encode_with_transformers(torch.tensor(group)).float().cpu()
            for index, ids in enumerate(group):
                alone = engine.encode_with_transformers(torch.tensor([ids])).float().cpu()
                noise = max(noise, float((together[index] - alone[0]).abs().max()))
    return noise


def model_name() -> str:
    model = shared.sd_model
    repo = getattr(getattr(model, "model_config", None), "huggingface_repo", "?")
    return f"{type(model).__name__} ({repo})"


def save_recorded() -> None:
    """The recorded conditioning as `$FTF_PROBE_OUT/last-cond.safetensors`."""
    if "cond" not in RECORDED or not os.environ.get("FTF_PROBE_OUT"):
        return
    out = Path(os.environ["FTF_PROBE_OUT"])
    out.mkdir(parents=True, exist_ok=True)
    tensors = {name: value.contiguous() for name, value in RECORDED.items() if value is not None}
    save_file(tensors, str(out / "last-cond.safetensors"))


class Probe(scripts.Script):
    def title(self):
        return "Follow the Flow real-client probe"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        RECORDED.clear()
        shorten_calibration()

    def postprocess_batch(self, p, *args, **kwargs):
        save_recorded()
        spec_path = os.environ.get("FTF_PROBE_SPEC")
        if not spec_path or not Path(spec_path).exists():
            return
        spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
        result = {"name": spec["name"], "model": model_name()}
        TIMES.clear()
        try:
            cond, uncond = RECORDED["cond"], RECORDED["uncond"]
            original = encode(p, spec["plain"])
            expected, parts = set(), {}
            for _item, alone_text in spec["items"]:
                alone = encode(p, alone_text)
                for name, rows, alone_rows, columns in part_rows(spec["plain"], alone_text):
                    diff = float((cond[rows, columns] - alone[alone_rows, columns]).abs().max())
                    scale = float(alone[alone_rows, columns].abs().max())
                    worst, largest = parts.get(name, (0.0, 0.0))
                    parts[name] = (max(worst, diff), max(largest, scale))
                    expected.update(rows)
            if "T5" in parts and parts["T5"][0] > 0:  # not bit-identical: how much of it is Forge's own rounding
                result["t5_batch_noise"] = t5_batch_noise([alone_text for _item, alone_text in spec["items"]])
            others = [row for row in range(cond.shape[0]) if row not in expected]
            result.update(
                max_diff=max((diff for diff, _ in parts.values()), default=0.0),
                scale=max((scale for _, scale in parts.values()), default=0.0),
                parts=parts,
                rows=len(expected),
                total_rows=cond.shape[0],
                shape_equal=cond.shape == original.shape,
                others_equal=cond.shape == original.shape and torch.equal(cond[others], original[others]),
                negative_equal=uncond is not None and torch.equal(uncond, encode(p, spec["negative"])),
                vector_equal=None
                if RECORDED["vector"] is None
                else torch.equal(RECORDED["vector"], encode(p, spec["plain"], True)),
                changed=cond.shape != original.shape or not torch.equal(cond, original),
                encode_seconds=list(TIMES),
            )
        except Exception as error:  # reported to the suite as a failed row
            result["error"] = f"{type(error).__name__}: {error}"
        out = Path(os.environ["FTF_PROBE_OUT"])
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{spec['name']}.json").write_text(json.dumps(result), encoding="utf-8")
