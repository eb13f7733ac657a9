"""The ComfyUI nodes: *Follow the Flow Text Encode*, a stand-in for `CLIPTextEncode` (and, with its
`system_prompt`, for `CLIPTextEncodeLumina2`)."""

from __future__ import annotations

from collections.abc import Callable

from flowcore.patching.options import FlowOptions

from . import conditioning, report

SYSTEM_PROMPTS = ("superior", "alignment")  # the names of `CLIPTextEncodeLumina2`'s system prompts
MODE_AUTOMATIC = "Automatic"
MODE_MARKERS = "Markers only"
MODE_EVERY = "Every item"
# Each mode: how the node's sensitivity becomes the core's options. A new mode is one entry here.
MODES: dict[str, Callable[[float], FlowOptions]] = {
    MODE_AUTOMATIC: lambda sensitivity: FlowOptions(mode="auto", sensitivity=sensitivity),
    MODE_MARKERS: lambda sensitivity: FlowOptions(mode="markers", sensitivity=sensitivity),
    MODE_EVERY: lambda sensitivity: FlowOptions(mode="every", sensitivity=sensitivity),
}


class FollowTheFlowTextEncode:
    """Encodes a prompt like `CLIPTextEncode` (same inputs `clip` and `text`), then re-encodes leaked items on
    their own and patches their rows into the conditioning (Follow the Flow)."""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's name
        return {
            "required": {
                "text": (
                    "STRING",
                    {
                        "multiline": True,
                        "dynamicPrompts": True,
                        "tooltip": "The prompt. ~item~ always patches an item with its own encoding, ^item^ never "
                        "does; ComfyUI's (word:1.2) weights and embedding:name work as in CLIP Text Encode.",
                    },
                ),
                "clip": ("CLIP", {"tooltip": "The CLIP model used for encoding the text."}),
                "mode": (
                    list(MODES),
                    {
                        "default": MODE_AUTOMATIC,
                        "tooltip": "Automatic: find leaked items and patch them (and the ~marked~ ones). "
                        "Markers only: patch the ~marked~ items only; without markers, exactly CLIP Text Encode. "
                        "Every item: patch every item but ^kept^ ones and quality/style tags (masterpiece, bokeh), "
                        "with no detector: the exact form of what Cutoff does against colour bleeding.",
                    },
                ),
                "sensitivity": (
                    "FLOAT",
                    {
                        "default": 0.5,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.05,
                        "tooltip": "Higher patches more items (Automatic): the share of unrelated items patched "
                        "anyway is 0 at 0, about 1 in 10 at 0.5, 1 in 3 at 0.75, all at 1, on every model.",
                    },
                ),
            },
            "optional": {
                "system_prompt": (
                    [*SYSTEM_PROMPTS, "none"],
                    {
                        "default": SYSTEM_PROMPTS[0],
                        "tooltip": "Lumina 2 only (other models ignore it): the system prompt put before the text, as "
                        "CLIP Text Encode for Lumina2 does; none: the text alone, as CLIP Text Encode does.",
                    },
                ),
            },
        }

    RETURN_TYPES = ("CONDITIONING", "STRING", "IMAGE")
    RETURN_NAMES = ("conditioning", "report", "report_image")
    OUTPUT_TOOLTIPS = (
        "The conditioning, with the leaked items' rows patched.",
        "What was patched and why, per item (show it with a text preview node).",
        "The same as a picture: each item's leak score against the threshold.",
    )
    FUNCTION = "encode"
    CATEGORY = "conditioning"
    DESCRIPTION = (
        "Encodes a prompt like CLIP Text Encode and patches the items whose encoding leaked toward another item "
        "with their encoding alone (Follow the Flow)."
    )

    def encode(
        self, clip, text: str, mode: str = MODE_AUTOMATIC, sensitivity: float = 0.5, system_prompt: str = "superior"
    ):
        options = MODES.get(mode, MODES[MODE_AUTOMATIC])(min(1.0, max(0.0, float(sensitivity))))
        outcome = conditioning.encode(clip, text, options, system_prompt)
        heading = f"Follow the Flow: {mode}" + (f", sensitivity {sensitivity:.2f}" if options.detect else "")
        return outcome.conditioning, report.text(outcome, heading), report.image(outcome, heading)


NODE_CLASS_MAPPINGS = {"FollowTheFlowTextEncode": FollowTheFlowTextEncode}
NODE_DISPLAY_NAME_MAPPINGS = {"FollowTheFlowTextEncode": "Follow the Flow Text Encode"}
