"""Detection: which items leaked, on each encoder's own calibrated scale. Layer 3.

- `leakage`: an item's pull toward the other items (CSLS), its leak score and its presence.
- `calibration`: what "related" means on this encoder, measured on neutral prompts, fitted and cached;
  `measuring`: the calibration prompts encoded into the samples it fits; `progress`: what front ends show
  while it runs.
- `representative`: which of an item's tokens carry its meaning.

May import: `flowcore.errors`, `flowcore.prompts`, `flowcore.encoders`. Deciding and patching are above, in
`flowcore.patching`.
"""
