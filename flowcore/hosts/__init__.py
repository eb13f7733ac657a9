"""What every host adapter shares (the A1111/Forge glue in `follow_the_flow_webui/`, the ComfyUI nodes in
`comfyui_nodes/`): the host-neutral half of "a host's conditioning rows as parts that flowcore patches".

- `token_placement`: a host's tokens placed on the core's text and rows (CLIP's pre-tokens one by one, the
  placed line `PlacedLine` of layout, per-row weights and embedding vectors).
- `embeddings`: negative token ids for embedding vectors (textual inversion, `embedding:name`).
- `parts`: the base classes of a host's CLIP part and T5 part (context, the empty prompt, items alone in T5
  grouped by length, what cannot be re-derived).

Each host's own folder holds only what talks to that host's API (its tokenizer's chunks, its models, its
prompt syntax) and subclasses or calls these.

Imports: flowcore's lower layers only (`flowcore.errors`, `flowcore.prompts`, `flowcore.encoders`,
`flowcore.detection`, `flowcore.patching`); never `flowcore.models`, `flowcore.studies`, `flowcore.frontends`,
a host adapter, or a host's own modules (`modules.*`, `backend.*`, `comfy.*`).
"""
