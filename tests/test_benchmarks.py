"""The GPU benchmark script keeps working: run on the tiny pipeline on the CPU."""

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_generation.py"


def test_gpu_benchmark_runs_on_the_tiny_pipeline(capsys):
    spec = importlib.util.spec_from_file_location("gpu_generation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = module.main(["--tiny", "--device", "cpu", "--repeats", "1"])
    finally:
        torch.set_num_threads(threads)
    assert set(times) == {"run", "repeated", "generation"}
    assert all(value > 0 for value in times.values())
    assert times["repeated"] < times["run"]  # the cache works
    assert "share of generation" in capsys.readouterr().out


def test_gpu_benchmark_with_cuda_on_a_cpu_only_torch_says_so(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    spec = importlib.util.spec_from_file_location("gpu_generation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        module.main(["--device", "cuda"])
    except SystemExit as exit_info:
        assert exit_info.code == 2
    else:
        raise AssertionError("no error")
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "`--device` is 'cuda'" in err and "CPU-only" in err


def test_webui_overhead_benchmark_sends_each_variant_its_own_prompt(capsys):
    """Against a stub of the WebUI's API: every variant's prompt is new to the WebUI's cond cache (but for
    "off, same prompt again"), the every-item variant's colour items are not Automatic's, Cutoff gets the colours."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    sent = []

    class Stub(BaseHTTPRequestHandler):
        def _reply(self, data):
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802 (the standard library's name)
            self._reply({"txt2img": ["follow the flow", "cutoff"]} if "scripts" in self.path else {})

        def do_POST(self):  # noqa: N802
            sent.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self._reply({})

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    spec = importlib.util.spec_from_file_location("webui_overhead", SCRIPT.parent / "webui_overhead.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        times = module.main(["--url", f"http://127.0.0.1:{server.server_port}", "--rounds", "1"])
    finally:
        server.shutdown()
    names = list(times)
    assert "FtF Every item" in names and "Cutoff" in names
    rounds = [dict(zip(names, sent[i : i + len(names)])) for i in range(0, len(sent), len(names))]
    for payloads in rounds:
        prompts = [payload["prompt"] for name, payload in payloads.items() if name != "off, same prompt again"]
        assert len(set(prompts)) == len(prompts)
        every, automatic = payloads["FtF Every item"], payloads["FtF Automatic"]
        assert every["alwayson_scripts"]["Follow the Flow"]["args"][:2] == [True, "Every item"]
        assert not set(every["prompt"].split(", ")[1:]) & set(automatic["prompt"].split(", ")[1:])
    assert "\nFtF Every item " in capsys.readouterr().out  # its row of the table


def test_tag_prompt_benchmark_data_and_segmentation_table(capsys):
    """The held-out tag prompts are well formed (every expected item is text of its prompt) and the
    segmentation table runs; its numbers are reported by the benchmark, not asserted here."""
    spec = importlib.util.spec_from_file_location("tag_prompts", SCRIPT.parent / "tag_prompts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cases = module.held_out_cases()
    assert len(cases) >= 15
    for case in cases:
        assert all(item in case["prompt"] for item in case["items"] + case["style"]), case["prompt"]
    assert len(module.neutral_prompts()) >= 20
    assert all(len(prompt.split(",")) >= 10 for prompt in module.neutral_prompts())
    totals = module.segmentation_table()
    assert totals["expected"] == sum(len(case["items"]) for case in cases)
    assert "subject items found" in capsys.readouterr().out
