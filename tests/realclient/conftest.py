"""The real-client suite runs against real hosts (`tests/realclient/run.py`), never under pytest."""

collect_ignore_glob = ["*"]
