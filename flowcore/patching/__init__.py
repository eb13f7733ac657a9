"""Patching: from a prompt and its encoding to a patched encoding and a report. Layer 4.

- `patcher`: `FlowPatcher`, the steps in order (read, segment, place, score, decide, patch, finish).
- `options`: every knob, validated; `decision`: whether an item is patched and why; `interventions`: the
  paper's interventions as tensor functions; `finish`: redundant-token removal and the end-token rows;
  `report`: what was found and done; `cache`: the patcher's caches.
- `joint`: several encoders of one prompt (SDXL, SD 3.5, Flux), one decision per item.

May import: `flowcore.errors`, `flowcore.prompts`, `flowcore.encoders`, `flowcore.detection`.
"""
