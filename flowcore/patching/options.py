"""`FlowOptions`: every knob of the patcher, validated once, with the reason for each default."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from flowcore.errors import OptionsError

TAIL_CHOICES = ("leave", "rederive")
AUTO, MARKERS, EVERY = "auto", "markers", "every"
MODE_CHOICES = (AUTO, MARKERS, EVERY)


@dataclass(frozen=True, init=False)
class FlowOptions:
    """What `FlowPatcher` does with a prompt.

    - `mode`: which items are patched with their isolated encoding.
      "auto" (default): the items the leak detector flags, and `~marked~` ones;
      "markers": only `~marked~` items (no parser, no detector: the cheapest);
      "every": every item, without the detector (the exact, per-item form of what Cutoff approximates).
      In every mode `^kept^` items are never patched and `~marked~` ones always are.
      `detect=True` / `detect=False`, the old spelling, still works and means "auto" / "markers".
    - `sensitivity`: 0..1, how readily an item is patched, with the same meaning on every encoder: the share of
      unrelated items (the encoder's calibration prompts) whose score reaches the threshold is 0 at 0 (nothing
      is patched), 10% at the default 0.5, 32% at 0.75 and 100% at 1 (`flowcore.detection.leakage.patch_share`).
      Automatic mode only.
    - `tail`: the EOS and padding rows, which in a causal encoder carry a blend of the whole chunk.
      "leave" keeps them as encoded (the paper's choice); "rederive" re-encodes the chunk with the patched
      items' states swapped in at every layer and takes those rows from it, so they no longer carry the leak.
    - `remove_redundant`: replace each item's non-representative tokens with the clean-pad baseline
      (the paper's redundant-token removal).
    - `patch_style_tags`: also patch quality, style and camera tags ("masterpiece", "bokeh", "85mm"; see
      `flowcore.prompts.style_tags`). Off by default: they say how the image should look, not what is in it, so an
      isolated encoding of them fixes nothing; they are still scored and can still be named as a leak's source.
    - `style_tags`: extra lines for the style-tag list (its format: a tag, or `re:` and a regular expression).
    """

    mode: str = AUTO
    sensitivity: float = 0.5
    tail: str = "leave"
    remove_redundant: bool = False
    patch_style_tags: bool = False
    style_tags: tuple[str, ...] = ()

    def __init__(
        self,
        mode: str | None = None,
        sensitivity: float = 0.5,
        tail: str = "leave",
        remove_redundant: bool = False,
        patch_style_tags: bool = False,
        style_tags: tuple[str, ...] | list[str] = (),
        *,
        detect: bool | None = None,
    ) -> None:
        if detect is not None:
            if not isinstance(detect, bool):
                raise OptionsError(f"`detect` must be True or False but is {detect!r}.")
            implied = AUTO if detect else MARKERS
            if mode is not None and mode != implied:
                raise OptionsError(f"`detect={detect}` means `mode={implied!r}` but `mode` is {mode!r}; pass one.")
            mode = implied
        values = {
            "mode": AUTO if mode is None else mode,
            "sensitivity": sensitivity,
            "tail": tail,
            "remove_redundant": remove_redundant,
            "patch_style_tags": patch_style_tags,
            "style_tags": tuple(style_tags) if isinstance(style_tags, (list, tuple)) else style_tags,
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self._check()

    def _check(self) -> None:
        if isinstance(self.mode, bool):
            raise OptionsError(
                f"`mode` must be one of {MODE_CHOICES} but is {self.mode!r}; "
                f"`detect={self.mode}` is the old spelling of `mode={AUTO if self.mode else MARKERS!r}`."
            )
        if self.mode not in MODE_CHOICES:
            raise OptionsError(f"`mode` must be one of {MODE_CHOICES} but is {self.mode!r}.")
        if not isinstance(self.sensitivity, (int, float)) or not 0.0 <= self.sensitivity <= 1.0:
            raise OptionsError(f"`sensitivity` must be a number between 0 and 1 but is {self.sensitivity!r}.")
        if self.tail not in TAIL_CHOICES:
            raise OptionsError(f"`tail` must be one of {TAIL_CHOICES} but is {self.tail!r}.")
        for name in ("remove_redundant", "patch_style_tags"):
            if not isinstance(getattr(self, name), bool):
                raise OptionsError(f"`{name}` must be True or False but is {getattr(self, name)!r}.")
        if not isinstance(self.style_tags, tuple) or not all(isinstance(line, str) for line in self.style_tags):
            raise OptionsError(f"`style_tags` must be a list of strings but is {self.style_tags!r}.")

    @property
    def detect(self) -> bool:
        """Whether the leak detector runs (automatic mode); the old option's name, kept for old callers."""
        return self.mode == AUTO

    @property
    def parse(self) -> bool:
        """Whether the prompt's items are found by the parser (automatic and every-item modes), not only its
        marked spans."""
        return self.mode != MARKERS

    def to_dict(self) -> dict:
        return asdict(self)
