"""Stand-in for ``backend/text_processing/parsing.py``: ``parse_prompt_attention(text, emphasis)``.

Forge's function is the WebUI's ``prompt_parser.parse_prompt_attention`` with an emphasis argument:
``"None"`` returns the text literally (``[[text, 1.0]]``, BREAK not split), anything else parses
weights and BREAK exactly as the WebUI does -- so this delegates to the stand-in's parser."""

from __future__ import annotations

from modules import prompt_parser

re_attention = prompt_parser._ATTENTION_TOKEN  # the same alternatives as Forge's verbose regex
re_break = prompt_parser.re_break


def parse_prompt_attention(text, emphasis):
    if emphasis == "None":
        return [[text, 1.0]]
    return prompt_parser.parse_prompt_attention(text)
