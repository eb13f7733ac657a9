"""Every mistake a new user makes gets one line naming the argument, its value and what to do: exit status 2 for
a bad argument (also one judged only once the model is loaded), 1 for a failure while running; from Python, a
`FlowcoreError` subclass whose message names the argument. Checks that need no model run before any model loads."""

from __future__ import annotations

import json
import threading
import zipfile

import pytest
import torch
from pipeline_fixtures import *  # noqa: F403 (the tiny pipelines, saved in each format)

import flowcore.models.pipelines
import flowcore.models.text_models
from flowcore import ClipEncoder, FlowPatcher
from flowcore.errors import (
    DeviceError,
    FlowcoreError,
    InputError,
    LabelsError,
    MappingError,
    ModelFileError,
    OptionsError,
    PromptError,
)
from flowcore.frontends.cli import main


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """The exit status and the last line on stderr (progress bars of a model load may come before it)."""
    status = main(args)
    err = capsys.readouterr().err.strip().replace("\r", "\n")
    return status, err.splitlines()[-1] if err else ""


@pytest.fixture()
def nothing_loads(monkeypatch):
    """Fail the test if a model starts loading: the check must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(flowcore.models.text_models, "load_encoder", refuse)
    monkeypatch.setattr(flowcore.models.pipelines, "load_pipeline", refuse)


@pytest.fixture()
def cpu_only_torch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)


@pytest.mark.parametrize("command", ["analyze", "compare"])
def test_device_cuda_on_a_cpu_only_torch(command, sd15_folder, capsys, nothing_loads, cpu_only_torch):
    status, err = run_cli([command, "a zebra", "--model", str(sd15_folder), "--device", "cuda"], capsys)
    assert status == 2
    assert err.count("\n") == 0 and "`--device` is 'cuda'" in err and "CPU-only" in err and "cpu" in err
    assert f"pip install --force-reinstall torch=={torch.__version__.split('+')[0]}`" in err  # how to get CUDA


def test_device_gpu_is_not_a_device(sd15_folder, capsys, nothing_loads):
    status, err = run_cli(["analyze", "a zebra", "--model", str(sd15_folder), "--device", "gpu"], capsys)
    assert status == 2 and "`--device` must be auto, cpu, cuda, cuda:N or mps but is 'gpu'" in err
    assert "use `cuda`" in err


def test_clip_skip_zero_before_loading(sd15_folder, capsys, nothing_loads):
    status, err = run_cli(["analyze", "a zebra", "--model", str(sd15_folder), "--clip-skip", "0"], capsys)
    assert status == 2 and "`--clip-skip` must be at least 1" in err and "is 0" in err


def test_clip_skip_fifty_once_the_model_is_loaded(sd15_folder, capsys):
    status, err = run_cli(["analyze", "a zebra", "--model", str(sd15_folder), "--clip-skip", "50"], capsys)
    assert status == 2 and err == "flowcore: error: `--clip-skip` must be between 1 and 2 but is 50."


def test_sensitivity_before_loading(sd15_folder, capsys, nothing_loads):
    status, err = run_cli(["analyze", "a zebra", "--model", str(sd15_folder), "--sensitivity", "1.5"], capsys)
    assert status == 2 and "`--sensitivity` must be a number between 0 and 1 but is 1.5" in err


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("empty.safetensors", b"", "is empty (0 bytes)"),
        ("corrupt.safetensors", b"\xff" * 64, "is not a valid .safetensors file"),
        ("model.bin", b"PK\x03\x04", "not .bin"),
        ("old.ckpt", b"\x80\x02}q\x00.", "is not a PyTorch zip checkpoint"),
    ],
)
def test_unreadable_model_files(name, content, expected, tmp_path, capsys, nothing_loads):
    path = tmp_path / name
    path.write_bytes(content)
    status, err = run_cli(["analyze", "a zebra", "--model", str(path)], capsys)
    assert status == 2 and expected in err and "`--model`" in err and name in err
    assert err.count("\n") == 0


def test_truncated_safetensors(sd15_single_file, tmp_path, capsys, nothing_loads):
    path = tmp_path / "cut.safetensors"
    path.write_bytes(sd15_single_file.read_bytes()[:100_000])
    status, err = run_cli(["compare", "a zebra", "--model", str(path)], capsys)
    assert status == 2 and "is truncated" in err


def test_a_ckpt_zip_that_is_not_a_checkpoint(tmp_path, capsys):
    path = tmp_path / "notes.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    status, err = run_cli(["analyze", "a zebra", "--model", str(path)], capsys)
    assert status == 2 and "`--model`" in err and "notes.ckpt" in err


@pytest.mark.parametrize("command", ["analyze", "compare"])
def test_a_single_file_no_bundled_config_fits_says_pass_config(command, sd15_single_file, capsys, tmp_path):
    """The tiny checkpoint is SD 1.x-shaped but 32 wide: no bundled config fits it."""
    status, err = run_cli([command, "a zebra", "--model", str(sd15_single_file), "--out", str(tmp_path)][:4], capsys)
    assert status == 2 and "--config" in err and sd15_single_file.name in err
    assert err.count("\n") == 0


def test_missing_model_path_and_missing_config_folder(tmp_path, sd15_folder, capsys, nothing_loads):
    status, err = run_cli(["analyze", "a zebra", "--model", str(tmp_path / "nope.safetensors")], capsys)
    assert status == 2 and "No model file or folder" in err and "`--model`" in err
    status, err = run_cli(["analyze", "a zebra", "--model", str(sd15_folder), "--config", str(tmp_path)], capsys)
    assert status == 2 and "`--config` must be a diffusers folder" in err


def test_a_model_missing_from_the_cache_is_a_run_time_failure(capsys):
    status, err = run_cli(["analyze", "a zebra", "--model", "nobody/no-such-model", "--device", "cpu"], capsys)
    assert status == 1 and "hf download nobody/no-such-model" in err


def test_a_nul_in_the_prompt(sd15_folder, capsys, nothing_loads):
    status, err = run_cli(["analyze", "a zebra\x00crossing", "--model", str(sd15_folder)], capsys)
    assert status == 2 and "`prompt` contains a NUL character" in err and "at character 7" in err


# --- from Python ---


@pytest.mark.parametrize(
    "prompt, expected",
    [
        (None, "`prompt` must be a str but is NoneType"),
        (42, "`prompt` must be a str but is int"),
        (b"a zebra", "`prompt` must be a str but is bytes"),
        ("a zebra\x00", "`prompt` contains a NUL character"),
    ],
)
def test_run_with_a_prompt_that_is_not_text(patcher, prompt, expected):
    with pytest.raises(PromptError, match=expected):
        patcher.run(prompt)
    with pytest.raises(FlowcoreError):
        patcher.patch(torch.zeros(77, 32), prompt)


def test_python_errors_are_flowcore_errors_naming_the_argument(clip_encoder, tokenizer, clip_model):
    with pytest.raises(OptionsError, match="`clip_skip`"):
        ClipEncoder(tokenizer, clip_model, clip_skip=0)
    with pytest.raises(OptionsError, match="`options`"):
        FlowPatcher(clip_encoder, options={"sensitivity": 0.5})
    with pytest.raises(DeviceError, match="`device`"):
        flowcore.models.text_models.load_encoder("x/y", device="gpu")
    with pytest.raises(OptionsError, match="`clip_skip`"):
        flowcore.models.text_models.load_encoder("x/y", clip_skip=0)
    from flowcore.detection.representative import RepresentativeClassifier

    with pytest.raises(OptionsError, match="`k`"):
        RepresentativeClassifier(k=0)
    with pytest.raises(LabelsError, match="fit"):
        RepresentativeClassifier().predict(torch.zeros(1, 4))
    for error in (InputError, OptionsError, PromptError, ModelFileError, DeviceError, LabelsError):
        assert issubclass(error, FlowcoreError) and issubclass(error, ValueError) and error.exit_status == 2
    assert issubclass(MappingError, FlowcoreError) and MappingError.exit_status == 1


# --- output a user reads ---


def test_analyze_loads_only_the_text_encoder(sd15_folder, capsys, monkeypatch):
    monkeypatch.setattr(flowcore.models.pipelines, "load_pipeline", lambda *a, **k: pytest.fail("the whole pipeline"))
    assert main(["analyze", "a ~standing zebra~", "--model", str(sd15_folder), "--device", "cpu"]) == 0
    assert "standing zebra" in capsys.readouterr().out


def test_analyze_from_a_single_file_reads_only_text_tensors(tiny_sd15, sd15_folder, sd15_single_file, monkeypatch):
    read = []
    original = flowcore.models.text_models.read_text_tensors
    monkeypatch.setattr(
        flowcore.models.text_models, "read_text_tensors", lambda path: read.append(original(path)) or read[-1]
    )
    encoder = flowcore.models.text_models.load_encoder(sd15_single_file, config=sd15_folder, device="cpu")
    assert all(key.startswith("cond_stage_model.") for key in read[0])
    want = tiny_sd15.text_encoder.state_dict()
    got = encoder.towers[0].model.state_dict()
    for key, value in want.items():
        assert torch.equal(value, got[key]), key


def test_sdxl_text_encoders_from_a_folder(tiny_sdxl, tmp_path):
    folder = tmp_path / "sdxl"
    tiny_sdxl.save_pretrained(folder)
    encoder = flowcore.models.text_models.load_encoder(folder, device="cpu")
    from flowcore.models.pipelines import encoder_for_pipeline

    expected = encoder_for_pipeline(tiny_sdxl)
    layout = encoder.layout("a standing zebra")
    torch.testing.assert_close(encoder.encode(layout).rows, expected.encode(layout).rows)


def test_each_warning_once_wide_characters_aligned_and_repeated_sources_placed(sd15_folder, capsys):
    prompt = "a 斑马 zebra with ~bats~, bats and ~oops"
    assert main(["analyze", prompt, "--model", str(sd15_folder), "--device", "cpu", "--sensitivity", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("Unclosed marker") == 1
    lines = [line for line in out.splitlines() if line and not line.startswith(("threshold", "warning", "---"))]
    from flowcore.frontends.cli import display_width

    columns = set()
    for line, item in zip(lines, ["item", "斑马 zebra", "bats", "bats"]):
        rest = line[len(item) :]
        columns.add(display_width(item) + len(rest) - len(rest.lstrip(" ")))
    assert len(columns) == 1, out  # the rows column starts at the same terminal column on every line
    assert "bats @ " in out


def test_an_empty_prompt_says_so(sd15_folder, patcher, capsys):
    """On the command line it is a mistake (status 2, before the model loads); in the library, an empty report."""
    from flowcore.frontends.cli import format_table

    assert main(["analyze", "", "--model", str(sd15_folder), "--device", "cpu"]) == 2
    assert "The `prompt` argument is empty" in capsys.readouterr().err
    assert "The prompt is empty" in format_table(patcher.run(""))


def test_every_command_has_a_description():
    from flowcore.frontends.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    for name, sub in commands.choices.items():
        assert sub.description and len(sub.description) > 30, name


def test_help_needs_no_torch():
    import subprocess
    import sys

    code = "import sys; from flowcore.frontends.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"


def test_concurrent_runs_share_the_caches_safely(patcher):
    prompts = [f"a crosswalk next to a bus station with a ~standing zebra~ number {n % 3}" for n in range(12)]
    errors, results = [], {}

    def work(prompt):
        try:
            results[prompt] = patcher.run(prompt).patched
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=work, args=(p,)) for p in prompts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for prompt, patched in results.items():
        torch.testing.assert_close(patched, patcher.run(prompt).patched)


def test_generate_leaves_the_pipelines_progress_bar_as_it_was(tiny_sd15):
    from flowcore.models.pipelines import generate, patcher_for_pipeline

    tiny_sd15.set_progress_bar_config(desc="mine")
    patcher = patcher_for_pipeline(tiny_sd15)
    generate(tiny_sd15, patcher.run("a zebra"), steps=1, width=64, height=64, progress=False, encoder=patcher.encoder)
    assert tiny_sd15._progress_bar_config == {"desc": "mine"}


def test_config_folders_are_private_to_each_call():
    from flowcore.models.model_configs import write_config_folder

    first, second = write_config_folder("sd15"), write_config_folder("sd15")
    assert first != second
    assert json.loads((first / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"


def test_load_nlp_honours_the_name_asked_for(monkeypatch):
    import flowcore.prompts.segmentation as seg

    monkeypatch.setattr(seg, "_loaded", {"en_core_web_sm": "first"})
    monkeypatch.setattr(seg, "_load_if_installed", lambda name: f"pipeline {name}" if name == "other" else None)
    assert seg.load_nlp("other") == "pipeline other"
    monkeypatch.setenv("FLOWCORE_SPACY_MODEL", "other")
    assert seg.load_nlp() == "pipeline other"
    from flowcore.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="'missing'") as info:
        seg.load_nlp("missing")
    assert "{tried}" not in str(info.value)


def test_runtime_code_does_not_import_the_test_helpers():
    import subprocess
    import sys

    code = (
        "import sys, flowcore.models.pipelines, flowcore.models.text_models; print('flowcore.testing' in sys.modules)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"
