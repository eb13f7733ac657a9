"""`FlowOptions`: every knob of the patcher, validated once, with the reason for each default."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from flowcore.errors import OptionsError

TAIL_CHOICES = ("leave", "rederive")


@dataclass(frozen=True)
class FlowOptions:
    """What `FlowPatcher` does with a prompt.

    - `detect`: find leaked items automatically; when False only `~marked~` items are patched.
    - `sensitivity`: 0..1, how readily an item is patched, with the same meaning on every encoder: the share of
      unrelated items (the encoder's calibration prompts) whose score reaches the threshold is 0 at 0 (nothing
      is patched), 10% at the default 0.5, 32% at 0.75 and 100% at 1 (`flowcore.analysis.patch_share`).
    - `tail`: the EOS and padding rows, which in a causal encoder carry a blend of the whole chunk.
      "leave" keeps them as encoded (the paper's choice); "rederive" re-encodes the chunk with the patched
      items' states swapped in at every layer and takes those rows from it, so they no longer carry the leak.
    - `remove_redundant`: replace each item's non-representative tokens with the clean-pad baseline
      (the paper's redundant-token removal).
    """

    detect: bool = True
    sensitivity: float = 0.5
    tail: str = "leave"
    remove_redundant: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.detect, bool):
            raise OptionsError(f"`detect` must be True or False but is {self.detect!r}.")
        if not isinstance(self.sensitivity, (int, float)) or not 0.0 <= self.sensitivity <= 1.0:
            raise OptionsError(f"`sensitivity` must be a number between 0 and 1 but is {self.sensitivity!r}.")
        if self.tail not in TAIL_CHOICES:
            raise OptionsError(f"`tail` must be one of {TAIL_CHOICES} but is {self.tail!r}.")
        if not isinstance(self.remove_redundant, bool):
            raise OptionsError(f"`remove_redundant` must be True or False but is {self.remove_redundant!r}.")

    def to_dict(self) -> dict:
        return asdict(self)
