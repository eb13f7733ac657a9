"""Models: loading text encoders and diffusers pipelines offline, and where they run. Layer 5.

- `model_source`: where a model comes from (local hub cache, diffusers folder, single file), checked before
  loading; `model_configs`: bundled configs for single files; `clip_tokenizer`: CLIP's tokenizer offline.
- `text_models`: only the tokenizers and text encoders (`flowcore analyze`); `pipelines`: a whole pipeline,
  its `FlowPatcher` and generation from patched embeddings.
- `devices`: "auto", "cpu", "cuda:1"...; `quiet`: third-party notices hidden; `compat`: oldest versions.

May import: every layer below (`errors`, `prompts`, `encoders`, `detection`, `patching`). Not `hosts`, which
sits beside it: the host adapters get their models from the host.
"""
