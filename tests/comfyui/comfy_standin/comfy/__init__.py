"""Stand-in of ComfyUI's `comfy` package (see the README)."""
