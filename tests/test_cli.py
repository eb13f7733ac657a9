"""The `flowcore` command, run in-process on a tiny random-weight model saved as a diffusers folder."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image
from pipeline_fixtures import *  # noqa: F403 (the tiny pipelines, saved in each format)

from flowcore import FlowOptions
from flowcore.cli import build_parser, main, options_from
from flowcore.errors import OptionsError

PROMPT = "a crosswalk next to a bus station with a ~standing zebra~"
FAST = ["--steps", "2", "--width", "64", "--height", "64"]


def test_help_lists_every_command_and_how_to_pick_a_model():
    completed = subprocess.run([sys.executable, "-m", "flowcore", "--help"], capture_output=True, text=True, check=True)
    for word in ("analyze", "compare", "explore", "ui", ".safetensors", "~standing zebra~"):
        assert word in completed.stdout
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--help"])
    assert exit_info.value.code == 0


def test_analyze_table_and_json(sd15_folder, capsys):
    assert main(["analyze", PROMPT, "--model", str(sd15_folder), "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "standing zebra" in table and "PATCH" in table and "marked ~isolate~" in table and "threshold" in table

    assert main(["analyze", PROMPT, "--model", str(sd15_folder), "--device", "cpu", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    zebra = next(item for item in data["items"] if item["item"]["text"] == "standing zebra")
    assert zebra["patched"] and zebra["representative_rows"] == [zebra["rows"][-1]]
    assert [t["text"] for t in data["tokens"]][-2:] == ["standing", "zebra"]


def test_analyze_every_item_mode(sd15_folder, capsys):
    prompt = "masterpiece, white shirt, green tie, ^red shoes^"
    assert main(["analyze", prompt, "--model", str(sd15_folder), "--device", "cpu", "--mode", "every"]) == 0
    table = capsys.readouterr().out
    assert table.count("every-item mode") == 3  # two items and the threshold line
    assert "quality/style tag" in table and "marked ^keep^" in table


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], FlowOptions()),
        (["--mode", "every"], FlowOptions(mode="every")),
        (["--no-detect"], FlowOptions(mode="markers")),
        (["--no-detect", "--mode", "markers"], FlowOptions(mode="markers")),
        (["--mode", "every", "--patch-style-tags"], FlowOptions(mode="every", patch_style_tags=True)),
    ],
)
def test_mode_options(argv, expected):
    assert options_from(build_parser().parse_args(["analyze", "x", *argv])) == expected


def test_mode_option_errors_and_style_tag_files(tmp_path, capsys):
    with pytest.raises(OptionsError, match="--no-detect"):
        options_from(build_parser().parse_args(["analyze", "x", "--no-detect", "--mode", "every"]))
    tags = tmp_path / "tags.txt"
    tags.write_text("kodak portra 400\nre:fujifilm \\w+\n", encoding="utf-8")
    options = options_from(build_parser().parse_args(["analyze", "x", "--style-tags", str(tags)]))
    assert options.style_tags == ("kodak portra 400", "re:fujifilm \\w+")
    assert main(["analyze", "x", "--style-tags", str(tmp_path / "missing.txt")]) == 2
    assert "Cannot read `--style-tags" in capsys.readouterr().err


def test_compare_writes_side_by_side_png_and_html(sd15_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compare", PROMPT, "--model", str(sd15_folder), "--device", "cpu", "--out", str(out), *FAST]) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(out / "compare.png") as image:
        assert image.width >= 128 and image.height > 64
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "~standing zebra~" in page
    assert json.loads((out / "report.json").read_text())["text"] == PROMPT.replace("~", "")


def test_explore_writes_a_grid_of_items_and_tokens(sd15_folder, tmp_path, capsys):
    out = tmp_path / "explore"
    assert (
        main(
            [
                "explore",
                "a standing zebra",
                "--model",
                str(sd15_folder),
                "--device",
                "cpu",
                "--out",
                str(out),
                "--columns",
                "5",
                *FAST,
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "5 images: full prompt; item: standing zebra; token: a; token: standing; token: zebra" in printed
    with Image.open(out / "explore.png") as grid:
        assert grid.width >= 5 * 64


def test_missing_model_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    assert main(["analyze", "a zebra", "--model", str(tmp_path / "nope.safetensors")]) == 2
    assert "flowcore: error: No model file or folder" in capsys.readouterr().err
