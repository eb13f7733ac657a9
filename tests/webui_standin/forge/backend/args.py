"""Stand-in for ``backend/args.py``: ``dynamic_args`` (what the engines read when they are built).

``embedding_dir`` is the stand-in's temporary embeddings folder (``standin.add_embedding`` writes into it)."""

from __future__ import annotations

dynamic_args: dict = {"embedding_dir": "./embeddings", "emphasis_name": "original", "online_lora": False}
