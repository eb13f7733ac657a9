"""Follow the Flow for ComfyUI: a node pack over `flowcore`, loaded through the repository's `__init__.py`.

- `nodes`: the node classes and their mappings;
- `conditioning`: a prompt encoded as `CLIPTextEncode` does, then patched with the core;
- `parts`: ComfyUI's text encoders (CLIP, T5) as the core's encoders;
- `llm`: its language-model encoders (Lumina 2's Gemma, Qwen-Image's Qwen 2.5 VL, HiDream's Llama) likewise;
- `layout`: where ComfyUI puts each token of a prompt, and its weight;
- `report`: the report as text and as a picture.

ComfyUI's own modules (`comfy.*`) are imported inside the functions that need them.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
