"""The node on ComfyUI's language-model families (the stand-in's tiny Lumina 2, Qwen-Image and HiDream): a marked
item's rows equal the family's own encode of the item alone in the same template (same layer, same weighting),
every other row and the extras are the family's own bit for bit, *Markers only* without markers is the family's
own node, *Every item* patches exactly the items.

References are independent of the node: the family's own nodes (`CLIPTextEncode`, `CLIPTextEncodeLumina2`), and
where an item sits is found from the token ids of the rows alone (the template is what two unrelated prompts
share at the start and at the end)."""

from __future__ import annotations

import comfy_standin
import pytest
import torch
from comfy_extras.nodes_lumina2 import CLIPTextEncodeLumina2
from llm_tokenizers import _gpt2_bytes, qwen25
from nodes import CLIPTextEncode

from comfyui_nodes import conditioning
from comfyui_nodes.llm import LlamaStackPart, piece_spans
from comfyui_nodes.llm import parts_for as llm_parts_for
from comfyui_nodes.nodes import FollowTheFlowTextEncode
from flowcore import FlowOptions
from flowcore.detection.calibration import Calibration
from flowcore.encoders.base import ItemRequest
from flowcore.encoders.layout import tokenize_with_offsets

PROMPT = "a crosswalk next to a bus station with a standing zebra"
ATOL = 2e-5
SYSTEM = "superior"


@pytest.fixture(scope="module")
def llms():
    built = {
        family: comfy_standin.make_clip(family, seed=10 + n) for n, family in enumerate(comfy_standin.LLM_FAMILIES)
    }
    built["hidream_no_t5"] = comfy_standin.make_clip("hidream_no_t5", seed=20)
    return built


def own(family, clip, text, system=SYSTEM):
    """The family's own node: `CLIPTextEncodeLumina2` for Lumina 2 (with a system prompt), else `CLIPTextEncode`:
    (cond `(rows, width)`, extras)."""
    if family == "lumina2" and system != "none":
        found = CLIPTextEncodeLumina2.execute(clip, text, system)[0]
    else:
        found = CLIPTextEncode().encode(clip, text)[0]
    return found[0][0][0], found[0][1]


def node(clip, text, mode="Markers only", sensitivity=0.5, system=SYSTEM):
    cond, report, _ = FollowTheFlowTextEncode().encode(clip, text, mode, sensitivity, system)
    return cond[0][0][0], cond[0][1], report


def row_ids(family, clip, text, key, system=SYSTEM):
    """The token ids of the rows of `key` in the family's own conditioning of `text` (ComfyUI's tokens: for
    Qwen-Image from the second `<|im_start|>` `user` line break on, as its encoder cuts them)."""
    wrapped = f"{CLIPTextEncodeLumina2.SYSTEM_PROMPT[system]} <Prompt Start> {text}" if family == "lumina2" else text
    ids = [entry[0] for entry in clip.tokenize(wrapped)[key][0]]
    if family == "qwen_image":
        second = [n for n, i in enumerate(ids) if i == 151644][1]
        ids = ids[second + 3 :]
    return ids


def unpadded(ids):
    """`ids` without the run of padding at their end (the last id, where it repeats)."""
    end = len(ids)
    while end > 1 and ids[end - 1] == ids[-1] and ids[end - 2] == ids[-1]:
        end -= 1
    return ids[: end - 1] if end < len(ids) else ids


def _shared(a, b, reverse=False):
    a, b = (a[::-1], b[::-1]) if reverse else (a, b)
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def template(family, clip, key, system=SYSTEM):
    """Rows of the template before and after a prompt (padding included): what `bats` and `car` share."""
    one, two = (unpadded(row_ids(family, clip, text, key, system)) for text in ("bats", "car"))
    return _shared(one, two), _shared(one, two, reverse=True)


def where(family, clip, text, item, key, system=SYSTEM):
    """`item`'s rows in the conditioning of `text`, and in the conditioning of `item` alone."""
    before, after = template(family, clip, key, system)
    alone = unpadded(row_ids(family, clip, spaced(key, text, item, item), key, system))
    ids = alone[before : len(alone) - after]
    prompt = row_ids(family, clip, text, key, system)
    for start in range(before, len(prompt) - len(ids) + 1):
        if prompt[start : start + len(ids)] == ids:
            return list(range(start, start + len(ids))), list(range(before, before + len(ids)))
    raise AssertionError(f"{item!r} not found in {text!r}")


KEYS = {"lumina2": "gemma2_2b", "qwen_image": "qwen25_7b", "hidream": "t5xxl"}
BYTE_LEVEL = ("qwen25_7b", "llama")  # a leading space is part of a word's token


def spaced(key, plain, item, alone_text):
    """The text an item is encoded alone as: for a byte-level BPE, with the space before it in the prompt (its
    tokens are the prompt's: `" zebra"` is another token than `"zebra"`)."""
    return " " + alone_text if key in BYTE_LEVEL and f" {item}" in plain else alone_text


def check(family, clip, marked, plain, items, alone_texts=None, system=SYSTEM, mode="Markers only"):
    """The node's conditioning of `marked`: each item's rows (T5's and, for HiDream, every Llama layer's) are the
    family's own encode of the item alone (or of `alone_texts`); every other row, the pooled output and the
    extras are the family's own of `plain`."""
    cond, extras, report = node(clip, marked, mode, system=system)
    original, original_extras = own(family, clip, plain, system)
    assert cond.shape == original.shape
    assert set(extras) == set(original_extras)
    for name in set(extras) - {"conditioning_llama3"}:
        a, b = extras[name], original_extras[name]
        assert (a is None and b is None) or torch.equal(a, b), name
    changed, stack_rows = [], []
    for item, alone_text in zip(items, alone_texts or items):
        key = KEYS[family]
        alone, _ = own(family, clip, spaced(key, plain, item, alone_text), system)
        rows, alone_rows = where(family, clip, plain, item, key, system)
        torch.testing.assert_close(cond[rows], alone[alone_rows], atol=ATOL, rtol=0)
        changed += rows
        if family == "hidream":
            alone_extras = own(family, clip, spaced("llama", plain, item, alone_text))[1]
            rows, alone_rows = where(family, clip, plain, item, "llama")
            got = extras["conditioning_llama3"][0][:, rows]
            torch.testing.assert_close(got, alone_extras["conditioning_llama3"][0][:, alone_rows], atol=ATOL, rtol=0)
            stack_rows += rows
    kept = [r for r in range(cond.shape[0]) if r not in changed]
    assert torch.equal(cond[kept], original[kept]), report
    if family == "hidream":
        stack, original_stack = extras["conditioning_llama3"], original_extras["conditioning_llama3"]
        kept = [r for r in range(stack.shape[2]) if r not in stack_rows]
        assert stack.shape == original_stack.shape
        assert torch.equal(stack[:, :, kept], original_stack[:, :, kept])
    return report


@pytest.mark.parametrize("family", comfy_standin.LLM_FAMILIES)
def test_markers_only_without_markers_is_the_family_node(llms, family):
    for text in (PROMPT, "a (standing zebra:1.3) on \\(grass\\)"):
        cond, extras, report = node(llms[family], text)
        original, original_extras = own(family, llms[family], text)
        assert torch.equal(cond, original) and "nothing to patch" in report
        for name, value in original_extras.items():
            assert (value is None and extras[name] is None) or torch.equal(extras[name], value)


def test_lumina_system_prompts_are_clip_text_encode_lumina2s(llms):
    clip = llms["lumina2"]
    alignment = node(clip, PROMPT, system="alignment")[0]
    assert torch.equal(alignment, own("lumina2", clip, PROMPT, "alignment")[0])
    assert not torch.equal(alignment, own("lumina2", clip, PROMPT, "superior")[0])
    assert torch.equal(node(clip, PROMPT, system="none")[0], CLIPTextEncode().encode(clip, PROMPT)[0][0][0][0])


@pytest.mark.parametrize("family", comfy_standin.LLM_FAMILIES)
def test_a_marked_item_is_the_item_alone_in_the_same_template(llms, family):
    report = check(
        family, llms[family], PROMPT.replace("standing zebra", "~standing zebra~"), PROMPT, ["standing zebra"]
    )
    assert "Patched: 'standing zebra'" in report


@pytest.mark.parametrize("family", comfy_standin.LLM_FAMILIES)
def test_a_marked_item_inside_the_prompt(llms, family):
    """An item with tokens after it (in a causal model they do not reach it) and one at the prompt's start."""
    marked = "a ~crosswalk~ next to a ~bus station~ with a standing zebra"
    check(family, llms[family], marked, PROMPT, ["crosswalk", "bus station"])


@pytest.mark.parametrize("family", comfy_standin.LLM_FAMILIES)
def test_every_item_patches_exactly_the_items(llms, family):
    report = check(
        family, llms[family], PROMPT, PROMPT, ["crosswalk", "bus station", "standing zebra"], mode="Every item"
    )
    assert "Patched: 'crosswalk', 'bus station', 'standing zebra'" in report


def test_lumina_weights_as_comfyui_weighs_them(llms):
    """Gemma's rows are weighted as CLIP's: a weighted item's rows are its encode alone (the family's own, of the
    item as the whole prompt) moved toward ComfyUI's empty prompt at the same positions by its weight; weights
    elsewhere leave an item's rows its own encode alone."""
    clip = llms["lumina2"]
    plain = "a crosswalk next to a (bats:1.3)"
    cond, _, report = node(clip, "a crosswalk next to a ~(bats:1.3)~")
    original = own("lumina2", clip, plain)[0]
    alone = own("lumina2", clip, "bats")[0]
    rows, alone_rows = [cond.shape[0] - 1], [alone.shape[0] - 1]  # "▁bats", one token, ends both
    model = clip.cond_stage_model.gemma2_2b
    with torch.no_grad():
        empty = model.encode([[2] + [0] * (alone.shape[0] - 1)])[0][0]
    expected = (alone[alone_rows] - empty[alone_rows]) * 1.3 + empty[alone_rows]
    torch.testing.assert_close(cond[rows], expected, atol=ATOL, rtol=0)
    assert torch.equal(cond[:-1], original[:-1]) and "Patched: 'bats'" in report
    check(
        "lumina2",
        clip,
        "a (crosswalk:0.8) next to a ~standing zebra~",
        "a (crosswalk:0.8) next to a standing zebra",
        ["standing zebra"],
    )


def test_qwen_image_reads_weights_as_text(llms):
    """ComfyUI's Qwen-Image tokenizer has weights off: `(red:1.5)` is text, in the rows and in the items."""
    clip = llms["qwen_image"]
    plain = "a crosswalk (red:1.5) next to a standing zebra"
    check("qwen_image", clip, plain.replace("standing zebra", "~standing zebra~"), plain, ["standing zebra"])
    _, _, every = node(clip, plain, "Every item")
    assert "Patched: 'crosswalk', 'red:1.5', 'standing zebra'" in every
    assert "reads weights as text" in every


def test_qwen_image_prompt_with_its_own_template_is_left_alone(llms):
    clip = llms["qwen_image"]
    text = "<|im_start|>user\na ~standing zebra~<|im_end|>\n"
    outcome = conditioning.encode(clip, text, FlowOptions(mode="markers"))
    assert outcome.problems and "chat template" in outcome.problems[0]
    assert torch.equal(outcome.conditioning[0][0], own("qwen_image", clip, text.replace("~", ""))[0][None])


def _empty_stack(clip):
    """ComfyUI's empty prompt through HiDream's Llama (what its weighting moves toward), embeddings dropped."""
    model = clip.cond_stage_model.llama
    clip.load_model()
    with torch.no_grad():
        return model.encode([[128000] + [128009] * 127])[0][0][1:].float()


def test_hidream_weights_move_whole_llama_layers_as_comfyui_does(llms):
    """ComfyUI weighs HiDream's Llama stack by layer: token j's weight moves entry j - 1 (after the embeddings
    are dropped) of the whole prompt. The patched item's rows follow the same rule; T5 weighs by token."""
    clip = llms["hidream"]
    plain = "(a:1.5) crosswalk next to a standing zebra"
    cond, extras, report = node(clip, "(a:1.5) crosswalk next to a ~standing zebra~")
    original, original_extras = own("hidream", clip, plain)
    stack, original_stack = extras["conditioning_llama3"][0], original_extras["conditioning_llama3"][0]
    rows, alone_rows = where("hidream", clip, plain, "standing zebra", "llama")
    alone = own("hidream", clip, " standing zebra")[1]["conditioning_llama3"][0][:, alone_rows]
    empty = _empty_stack(clip)[:, rows]
    expected = alone.clone()
    expected[0] = (alone[0] - empty[0]) * 1.5 + empty[0]  # token 1, "a", weighs entry 0
    torch.testing.assert_close(stack[:, rows], expected, atol=ATOL, rtol=0)
    kept = [r for r in range(stack.shape[1]) if r not in rows]
    assert torch.equal(stack[:, kept], original_stack[:, kept])
    rows, alone_rows = where("hidream", clip, plain, "standing zebra", "t5xxl")
    torch.testing.assert_close(cond[rows], own("hidream", clip, "standing zebra")[0][alone_rows], atol=ATOL, rtol=0)


def test_hidream_without_t5_patches_the_llama_only(llms):
    clip = llms["hidream_no_t5"]
    cond, extras, report = node(clip, PROMPT.replace("standing zebra", "~standing zebra~"))
    original, original_extras = own("hidream", clip, PROMPT)
    assert torch.equal(cond, original)  # ComfyUI's zeros in place of T5
    rows, alone_rows = where("hidream", clip, PROMPT, "standing zebra", "llama")
    alone = own("hidream", clip, " standing zebra")[1]["conditioning_llama3"][0][:, alone_rows]
    torch.testing.assert_close(extras["conditioning_llama3"][0][:, rows], alone, atol=ATOL, rtol=0)
    assert "Llama 3:" in report and "T5:" not in report


def test_hidream_decides_once_over_t5_and_llama(llms, calibrated):
    """Automatic: the Llama scored on its last stacked entry, T5 on its rows, one decision per item."""
    calibrated.update({"T5": Calibration.identity(96), "Llama 3": Calibration.identity(32)})
    outcome = conditioning.encode(llms["hidream"], PROMPT, FlowOptions(sensitivity=1.0))
    assert not outcome.problems
    (t5_name, t5), (llama_name, llama) = outcome.reports
    assert (t5_name, llama_name) == ("T5", "Llama 3")
    assert [i.text for i in t5.patched_items] == [i.text for i in llama.patched_items] == outcome.patched
    assert any(entry.leak_score is not None for entry in llama.items)


def test_hidream_t5_keeps_its_first_128_tokens(llms):
    """HiDream reads T5's first chunk only: items past it have no T5 rows (and are patched in the Llama's)."""
    clip = llms["hidream"]
    text = "a red car with bats, " * 30 + "a ~standing zebra~"
    outcome = conditioning.encode(clip, text, FlowOptions(mode="markers"))
    assert not outcome.problems
    (_, t5), (_, llama) = outcome.reports
    (zebra,) = [entry for entry in t5.items if entry.item.text == "standing zebra"]
    assert not zebra.patched and "no tokens" in zebra.reason
    assert [i.text for i in llama.patched_items] == ["standing zebra"]
    plain = text.replace("~", "")
    cond, extras = outcome.conditioning[0][0][0], outcome.conditioning[0][1]
    original, original_extras = own("hidream", clip, plain)
    assert torch.equal(cond, original)
    rows, alone_rows = where("hidream", clip, plain, "standing zebra", "llama")
    alone = own("hidream", clip, " standing zebra")[1]["conditioning_llama3"][0][:, alone_rows]
    torch.testing.assert_close(extras["conditioning_llama3"][0][:, rows], alone, atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", ["lumina2", "qwen_image"])
def test_automatic_calibrates_the_language_model(llms, family):
    """Automatic with the part's own calibration (measured on the built-in prompts through the template)."""
    conditioning._PATCHERS.clear()
    outcome = conditioning.encode(llms[family], "a baseball game with bats flying over a standing zebra", FlowOptions())
    assert not outcome.problems
    ((_, report),) = outcome.reports
    assert report.threshold != float("inf")
    assert [entry.item.text for entry in report.items if entry.leak_score is not None] == ["bats", "standing zebra"]


@pytest.mark.parametrize("family", comfy_standin.LLM_FAMILIES)
def test_items_alone_at_their_positions_see_only_the_template(llms, family):
    """Template and layer: the prompt's own tokens encoded "alone" at their own positions inside the template are
    the family's own rows of the prompt (a causal model: the template before them is all they see), through the
    layer ComfyUI reads (HiDream: every layer, scored on the last)."""
    clip = llms[family]
    prefix = f"{CLIPTextEncodeLumina2.SYSTEM_PROMPT[SYSTEM]} <Prompt Start> " if family == "lumina2" else ""
    part = llm_parts_for(clip, prefix)[-1]
    layout = part.layout(PROMPT)
    (chunk,) = layout.chunks
    (alone,) = part.encode_isolated([ItemRequest(PROMPT, tuple(t.id for t in chunk), layout.leading)])
    cond, extras = own(family, clip, PROMPT)
    rows = list(range(layout.leading, layout.leading + len(chunk)))
    if isinstance(part, LlamaStackPart):
        stack = extras["conditioning_llama3"][0]
        torch.testing.assert_close(alone.layers[0], stack[:, rows], atol=ATOL, rtol=0)
        torch.testing.assert_close(alone.rows, stack[-1, rows], atol=ATOL, rtol=0)
    else:
        assert layout.n_rows == cond.shape[0]
        torch.testing.assert_close(alone.rows, cond[rows], atol=ATOL, rtol=0)
    if family == "qwen_image":  # the template's rows before the prompt are dropped, its 5 closing rows kept
        assert layout.leading == 0 and cond.shape[0] == len(chunk) + 5


def test_byte_level_spans_without_offsets():
    """transformers' slow byte-level BPE (ComfyUI's `Qwen2Tokenizer`) has no offsets: spans come from each
    token's bytes, special tokens and characters of several bytes included."""
    fast = qwen25()

    class Slow:
        byte_decoder = {char: byte for byte, char in zip(_byte_order(), _gpt2_bytes())}
        added_tokens_encoder = fast.added_tokens_encoder

        def __call__(self, text, add_special_tokens=False):
            return fast(text, add_special_tokens=add_special_tokens)

        def convert_ids_to_tokens(self, ids):
            return fast.convert_ids_to_tokens(ids)

    text = "<|im_start|>user\na café with bats — 85mm<|im_end|>\n"
    assert piece_spans(Slow(), text) == tokenize_with_offsets(fast, text)


def _byte_order() -> list[int]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    return printable + [b for b in range(256) if b not in printable]
