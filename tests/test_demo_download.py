"""The demo's download against a local stand-in of the Hugging Face hub (no real network): it says the size
first, fetches only the files `compare` uses, and `flowcore` then loads them offline. Offline, it says how to
get the model and exits with status 1."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubStandIn(BaseHTTPRequestHandler):
    """The endpoints `huggingface_hub` uses here: model info with file sizes, the file tree, HEAD/GET of a file."""

    def __init__(self, files: dict[str, bytes], requested: list[str], *args, **kwargs):
        self.files, self.requested = files, requested
        super().__init__(*args, **kwargs)

    def log_message(self, *args) -> None:  # quiet
        pass

    def _file(self) -> bytes | None:
        prefix = f"/{REPO}/resolve/"
        if not self.path.startswith(prefix):
            return None
        name = self.path[len(prefix) :].split("/", 1)[1].split("?")[0]
        return self.files.get(name)

    def _headers(self, body: bytes, content_type: str = "application/octet-stream") -> None:
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802
        body = self._file()
        self.send_response(200 if body is not None else 404)
        self._headers(body or b"")

    def do_GET(self) -> None:  # noqa: N802
        self.requested.append(self.path)
        if self.path.startswith(f"/api/models/{REPO}/tree/"):
            tree = [
                {"type": "file", "path": name, "size": len(body), "oid": hashlib.sha1(body).hexdigest()}
                for name, body in self.files.items()
            ]
            body = json.dumps(tree).encode()
            self.send_response(200)
            self._headers(body, "application/json")
            self.wfile.write(body)
            return
        if self.path.startswith(f"/api/models/{REPO}"):
            siblings = [{"rfilename": name, "size": len(body)} for name, body in self.files.items()]
            body = json.dumps({"id": REPO, "sha": COMMIT, "siblings": siblings}).encode()
            self.send_response(200)
            self._headers(body, "application/json")
            self.wfile.write(body)
            return
        body = self._file()
        self.send_response(200 if body is not None else 404)
        self._headers(body or b"")
        self.wfile.write(body or b"")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A tiny SD 1.5-style pipeline saved with fp16 weights, plus the files the demo must not fetch."""
    import torch

    from flowcore.testing import tiny_sd15_pipeline

    folder = tmp_path_factory.mktemp("hub-repo")
    pipe = tiny_sd15_pipeline()
    pipe.save_pretrained(folder)  # full-precision weights: present in the repository, not wanted
    pipe.to(torch.float16).save_pretrained(folder, variant="fp16")
    files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    files["v1-5-pruned.ckpt"] = b"x" * 100_000  # a large single file the demo never needs
    requested: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(HubStandIn, files, requested))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", files, requested
    server.shutdown()


def child_env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "HUGGINGFACE_"))}
    return {**env, "HF_HOME": str(tmp_path / "hf-home"), "PYTHONPATH": str(ROOT), **extra}


def run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_the_demo_fetches_only_what_it_uses_after_saying_the_size(hub, tmp_path):
    endpoint, files, requested = hub
    fetch = "import sys; sys.path.insert(0, 'tools'); import demo; print(demo.fetch())"
    done = run_python(fetch, child_env(tmp_path, HF_ENDPOINT=endpoint))
    assert done.returncode == 0, done.stderr

    # 1. The size first, from the hub's file metadata.
    import fnmatch

    sys.path.insert(0, str(ROOT / "tools"))
    import demo

    wanted = [name for name in files if any(fnmatch.fnmatch(name, p) for p in demo.ALLOW_PATTERNS)]
    size = sum(len(files[name]) for name in wanted) / 1e9
    assert f"Downloading {len(wanted)} files of {REPO} ({size:.2f} GB" in done.stdout

    # 2. Only those files were fetched: fp16 weights, configs, tokenizer.
    fetched = {path.split("/resolve/")[1].split("/", 1)[1] for path in requested if "/resolve/" in path}
    assert fetched == set(wanted)
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in fetched
    assert not any(name.endswith(("pytorch_model.safetensors", ".ckpt")) for name in fetched)
    assert "text_encoder/model.safetensors" not in fetched

    # 3. flowcore then loads it offline from the cache: the text encoder alone, and the whole pipeline.
    check = (
        "from flowcore.frontends.cli import main; from flowcore.models.pipelines import load_pipeline; import sys\n"
        f"status = main(['analyze', 'a ~standing zebra~', '--model', '{REPO}', '--device', 'cpu', '--no-detect'])\n"
        f"pipe = load_pipeline('{REPO}', device='cpu'); print('unet', pipe.unet.dtype); sys.exit(status)"
    )
    offline = run_python(check, child_env(tmp_path, HF_HUB_OFFLINE="1"))
    assert offline.returncode == 0, offline.stderr
    assert "standing zebra" in offline.stdout and "unet torch.float32" in offline.stdout


def test_offline_the_demo_says_how_to_get_the_model(tmp_path):
    code = "import sys; sys.path.insert(0, 'tools'); import demo; sys.exit(demo.main([]))"
    done = run_python(code, child_env(tmp_path, HF_HUB_OFFLINE="1"))
    assert done.returncode == 1
    assert "not in the local Hugging Face cache" in done.stderr and "--model path/to/v1-5.safetensors" in done.stderr


def load_demo():
    sys.path.insert(0, str(ROOT / "tools"))
    import demo

    return demo


def test_the_demo_takes_a_prompt_and_any_compare_option():
    demo = load_demo()
    assert demo.split_prompt(["--steps", "2", "a red car", "--model", "x.safetensors"]) == (
        "a red car",
        ["--steps", "2", "--model", "x.safetensors"],
    )
    assert demo.split_prompt(["--model=x", "--both", "a ~red~ car"]) == ("a ~red~ car", ["--model=x", "--both"])
    assert demo.split_prompt(["--model", "x", "--device", "cpu"]) == (None, ["--model", "x", "--device", "cpu"])


@pytest.fixture()
def compare_calls(monkeypatch):
    """The argument lists the demo gives `flowcore compare` (nothing generated)."""
    import flowcore.frontends.cli

    calls = []
    monkeypatch.setattr(flowcore.frontends.cli, "main", lambda argv: calls.append(argv) or 0)
    return calls


def test_on_the_papers_prompt_the_demo_patches_the_papers_item_where_nothing_is_flagged(compare_calls):
    demo = load_demo()
    assert demo.main(["--model", "m.safetensors", "--steps", "2"]) == 0
    assert demo.main(["a red car", "--model", "m.safetensors"]) == 0
    assert compare_calls == [
        ["compare", demo.PROMPT, "--model", "m.safetensors", "--steps", "2", "--otherwise-patch", "standing zebra"],
        ["compare", "a red car", "--model", "m.safetensors"],
    ]
