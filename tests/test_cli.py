"""The `flowcore` command, run in-process on a tiny random-weight model saved as a diffusers folder."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image
from pipeline_fixtures import *  # noqa: F403 (the tiny pipelines, saved in each format)

import flowcore
from flowcore import FlowOptions
from flowcore.errors import OptionsError
from flowcore.frontends.cli import build_parser, main, options_from

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


def test_version_is_printed_without_importing_torch():
    code = (
        "import sys\nfrom flowcore.frontends.cli import main\n"
        "try: main(['--version'])\nexcept SystemExit: print('torch' in sys.modules)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.split() == ["flowcore", flowcore.__version__, "False"]


@pytest.mark.parametrize("command", ["analyze", "compare", "explore"])
@pytest.mark.parametrize("prompt", ["", "   "])
def test_an_empty_prompt_is_a_mistake(command, prompt, capsys):
    assert main([command, prompt]) == 2
    error = capsys.readouterr().err
    assert error.startswith("flowcore: error: The `prompt` argument is empty") and error.count("\n") == 1


def test_compare_generates_once_when_nothing_is_patched(sd15_folder, tmp_path, capsys):
    out = tmp_path / "once"
    argv = ["compare", "a standing zebra", "--model", str(sd15_folder), "--device", "cpu", *FAST]
    assert main([*argv, "--mode", "markers", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Nothing was patched, so the patched image would be the original: generating it once" in printed
    with Image.open(out / "compare.png") as image:
        assert image.width < 2 * 64 + 2 * 8  # one tile
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 1

    assert main([*argv, "--mode", "markers", "--out", str(tmp_path / "both"), "--both"]) == 0
    assert "generating it once" not in capsys.readouterr().out
    assert (tmp_path / "both" / "report.html").read_text().count("data:image/png;base64,") == 2


def test_compare_otherwise_patch_marks_the_item_before_generating(sd15_folder, tmp_path, capsys):
    out = tmp_path / "fallback"
    prompt = "a crosswalk next to a bus station with a standing zebra"
    argv = ["compare", prompt, "--model", str(sd15_folder), "--device", "cpu", "--out", str(out), *FAST]
    assert main([*argv, "--mode", "markers", "--otherwise-patch", "standing zebra"]) == 0
    printed = capsys.readouterr().out
    marked = "a crosswalk next to a bus station with a ~standing zebra~"
    assert f"Nothing was patched, so `standing zebra` is marked and patched: {marked}" in printed
    assert "generating it once" not in printed
    report = json.loads((out / "report.json").read_text())
    assert report["prompt"] == marked and [i["item"]["text"] for i in report["items"] if i["patched"]] == [
        "standing zebra"
    ]
    assert main([*argv, "--otherwise-patch", "giraffe"]) == 2
    assert "`--otherwise-patch` is 'giraffe', which is not in the prompt" in capsys.readouterr().err


def test_compare_png_title_keeps_markers_and_names_what_was_patched(patcher, monkeypatch):
    from flowcore.studies import explore

    drawn = []
    monkeypatch.setattr(explore, "make_grid", lambda images, labels, columns, title: drawn.append((labels, title)))
    tile = Image.new("RGB", (256, 256), "gray")
    explore.comparison(patcher.run(PROMPT), tile, tile)
    explore.comparison(patcher.run("a standing zebra", FlowOptions(mode="markers")), tile, None)
    assert drawn == [
        (["original", "patched (Follow the Flow)"], f"{PROMPT}\npatched: standing zebra"),
        (["original = patched (no row changed)"], "a standing zebra\npatched: nothing"),
    ]


def test_titles_and_captions_wrap_only_where_the_image_is_too_narrow():
    from PIL import ImageFont

    from flowcore.studies.explore import make_grid, wrap

    font = ImageFont.load_default(size=11)
    assert wrap(f"{PROMPT}\npatched: standing zebra", font, 504) == [PROMPT, "patched: standing zebra"]
    assert wrap("patched (Follow the Flow)", font, 248) == ["patched (Follow the Flow)"]
    assert len(wrap(PROMPT, font, 140)) > 2  # a narrow grid: every word still drawn
    tile = Image.new("RGB", (64, 64), "gray")
    one_line, wrapped = make_grid([tile], ["x"], 1, title="short"), make_grid([tile], ["x"], 1, title=PROMPT)
    assert wrapped.height > one_line.height  # the title gets the lines it needs
