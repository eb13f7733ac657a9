"""Prompt text: what the user typed, read into lexical items. Layer 1, above `flowcore.errors` only.

- `prompt_syntax`: the AUTOMATIC1111 WebUI's syntax (`(word:1.3)`, `[a:b:n]`, `BREAK`, escapes) read without it.
- `markers`: `~isolate~` and `^keep^`; `reading`: a prompt checked, its markers moved into the syntax's text.
- `segmentation`: the text cut into lexical items with spaCy (sentences, tag lists); `items`: the item itself.
- `style_tags`: quality, style and camera tags; `language`: which language a prompt is written in.

May import: `flowcore.errors` and each other. Nothing here knows encoders, tensors or hosts.
"""
