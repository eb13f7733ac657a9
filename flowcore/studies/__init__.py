"""Studies: the paper's analyses and the detection benchmark, as scriptable calls. Layer 6.

- `explore`: what each item's tokens, and each single token, generate on their own (the paper's figures).
- `evaluation`: minimal pairs that check detection reacts to meaning, not to position or noise.

May import: every layer below (`errors` to `models`).
"""
