"""The `flowcore` command (also `python -m flowcore`): analyze a prompt, compare images, explore tokens, run the UI.

    flowcore analyze "a crosswalk next to a bus station with a standing zebra"
    flowcore compare "a crosswalk next to a bus station with a standing zebra" --model v1-5.safetensors
    flowcore explore "a baseball game at night, bats flying over the stadium" --steps 20
    flowcore ui

Models load from the local cache or disk only (see `flowcore.models.pipelines.load_pipeline`); `analyze` loads only the
tokenizer(s) and text encoder(s) (`flowcore.models.text_models.load_encoder`). Every argument that can be checked
without a model is checked before anything loads; a bad argument exits with status 2 and one line naming it, a
failure while running with status 1. This module imports no torch until a command runs, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import unicodedata
from pathlib import Path

from flowcore.errors import FlowcoreError, OptionsError, PromptError
from flowcore.patching.options import MARKERS, MODE_CHOICES, TAIL_CHOICES, FlowOptions

DESCRIPTION = """\
Follow the Flow: find the items of a text-to-image prompt whose encoding leaked toward another item
("zebra" after "crosswalk" becoming a zebra crossing), and patch them with their own, isolated encoding.

Mark items in the prompt to override detection: ~standing zebra~ is always patched, ^crosswalk^ never.
Prompts are read in the AUTOMATIC1111 WebUI's syntax by default: (zebra:1.3), [cat], BREAK, \\( escapes;
--syntax plain reads every character literally.

Modes: auto (patch the items the detector flags), markers (only ~marked~ items), every (every item but
^kept^ ones and quality/style tags such as "masterpiece" or "bokeh": the exact form of what Cutoff does)."""

DESCRIPTIONS = {
    "analyze": "Print the prompt's items, their leak scores and what would be patched. Loads only the model's "
    "tokenizer and text encoder.",
    "compare": "Generate the original and the patched image with the same seed; write them side by side "
    "(compare.png), an HTML report (report.html) and the report as JSON (report.json).",
    "explore": "Generate an image from each item's tokens alone and from each single token, in a grid "
    "(explore.png): what each part of the prompt carries.",
    "ui": "Start a Gradio app in the browser: type a prompt, see its items, choose which to patch, compare images.",
}
EMPHASIS_NAMES = {"original": "original", "no-norm": "no norm", "ignore": "ignore"}
# Python argument names in error messages -> this command's options
OPTION_NAMES = {
    "clip_skip": "--clip-skip",
    "sensitivity": "--sensitivity",
    "device": "--device",
    "model": "--model",
    "config": "--config",
    "tail": "--tail",
    "syntax": "--syntax",
    "emphasis": "--emphasis",
    "mode": "--mode",
    "style_tags": "--style-tags",
}

EPILOG = """\
models (--model):
  a hub id in the local Hugging Face cache   (default: stable-diffusion-v1-5/stable-diffusion-v1-5)
  a diffusers folder                          path/to/folder (with model_index.json)
  a single-file checkpoint                    path/to/model.safetensors (as the WebUI keeps them)
Nothing is downloaded: a missing model is an error that says how to get it.

examples:
  flowcore analyze "a crosswalk next to a bus station with a standing zebra"
  flowcore analyze "masterpiece, 1girl, white shirt, green tie, red shoes, blue hair" --mode every
  flowcore compare "a crosswalk next to a bus station with a standing zebra" \\
      --model ~/stable-diffusion-webui/models/Stable-diffusion/v1-5-pruned-emaonly.safetensors
  flowcore explore "a baseball game at night, bats flying over the stadium" --no-tokens
  flowcore ui --port 7861"""


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", metavar="SOURCE", help="hub id (local cache), diffusers folder or .safetensors file")
    group.add_argument("--config", metavar="FOLDER", help="for a single file: a diffusers folder with its configs")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: auto)")
    group.add_argument("--clip-skip", type=int, default=1, help="1 = last layer (default), 2 = penultimate (SD 1.x)")
    group.add_argument(
        "--syntax",
        choices=("webui", "plain"),
        default="webui",
        help="read the prompt as WebUI syntax (default) or plain text",
    )
    group.add_argument(
        "--emphasis",
        choices=tuple(EMPHASIS_NAMES),
        default="original",
        help="how (word:1.3) acts on the rows, as the WebUI's emphasis modes (default: original)",
    )


def _add_patch_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("detection and patching")
    group.add_argument(
        "--mode", choices=MODE_CHOICES, help="which items to patch: auto (default), markers (only ~marked~), every"
    )
    group.add_argument("--no-detect", action="store_true", help="the old spelling of --mode markers")
    group.add_argument("--sensitivity", type=float, default=0.5, help="0..1; higher patches more items (default 0.5)")
    group.add_argument(
        "--patch-style-tags", action="store_true", help="also patch quality/style/camera tags (masterpiece, bokeh)"
    )
    group.add_argument(
        "--style-tags", type=Path, metavar="FILE", help="more quality/style tags, one a line (see FLOWCORE_STYLE_TAGS)"
    )
    group.add_argument("--tail", choices=TAIL_CHOICES, default="leave", help="EOS/padding rows (default: leave)")
    group.add_argument("--remove-redundant", action="store_true", help="also replace redundant tokens with clean pads")


def _add_generation_arguments(parser: argparse.ArgumentParser, steps: int) -> None:
    group = parser.add_argument_group("generation")
    group.add_argument("--seed", type=int, default=0, help="the same seed for every image (default 0)")
    group.add_argument("--steps", type=int, default=steps, help=f"denoising steps (default {steps})")
    group.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    group.add_argument("--negative", default="", metavar="TEXT", help="negative prompt")
    group.add_argument("--width", type=int, help="image width (default: the model's)")
    group.add_argument("--height", type=int, help="image height (default: the model's)")
    group.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: flowcore-out/<prompt>)")


def version() -> str:
    """flowcore's version: the installed package's, else (run from a checkout, as the WebUI does) pyproject's."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("flowcore")
    except PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        found = re.search(r'^version = "([^"]+)"', pyproject.read_text(encoding="utf-8"), re.MULTILINE)
        return found.group(1) if found else "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one subcommand per job."""
    parser = argparse.ArgumentParser(
        prog="flowcore", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what flowcore does")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    analyze = commands.add_parser(
        "analyze", help="print the items, leak scores and what would be patched", description=DESCRIPTIONS["analyze"]
    )
    analyze.add_argument("prompt", help="the prompt (markers allowed)")
    analyze.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_model_arguments(analyze)
    _add_patch_arguments(analyze)

    compare = commands.add_parser(
        "compare",
        help="generate the original and the patched image; write a PNG, an HTML report and JSON",
        description=DESCRIPTIONS["compare"],
    )
    compare.add_argument("prompt", help="the prompt (markers allowed)")
    _add_model_arguments(compare)
    _add_patch_arguments(compare)
    _add_generation_arguments(compare, steps=25)
    compare.add_argument(
        "--both", action="store_true", help="generate the patched image even when nothing changed (the same image)"
    )
    compare.add_argument(
        "--otherwise-patch",
        metavar="TEXT",
        help="where nothing is patched, mark TEXT in the prompt (~TEXT~) and patch it, saying so (the demo's fallback)",
    )

    explore = commands.add_parser(
        "explore",
        help="images from each item's tokens alone and from each single token, in a grid",
        description=DESCRIPTIONS["explore"],
    )
    explore.add_argument("prompt", help="the prompt")
    explore.add_argument("--no-items", action="store_true", help="skip the per-item images")
    explore.add_argument("--no-tokens", action="store_true", help="skip the per-token images")
    explore.add_argument("--columns", type=int, default=4, help="tiles per grid row (default 4)")
    _add_model_arguments(explore)
    _add_patch_arguments(explore)
    _add_generation_arguments(explore, steps=25)

    ui = commands.add_parser(
        "ui", help="a Gradio app: type a prompt, toggle patches, compare images", description=DESCRIPTIONS["ui"]
    )
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    _add_model_arguments(ui)
    _add_patch_arguments(ui)
    return parser


def options_from(args: argparse.Namespace) -> FlowOptions:
    """The patcher's options from the command line (`--no-detect` is `--mode markers`)."""
    if args.no_detect and args.mode not in (None, MARKERS):
        raise OptionsError(f"`--no-detect` means `--mode markers` but `--mode` is {args.mode!r}; pass one.")
    extra = ()
    if args.style_tags is not None:
        try:
            extra = tuple(args.style_tags.read_text(encoding="utf-8").splitlines())
        except OSError as error:
            raise OptionsError(f"Cannot read `--style-tags {args.style_tags}`: {error.strerror}.") from error
    return FlowOptions(
        mode=MARKERS if args.no_detect else args.mode,
        sensitivity=args.sensitivity,
        tail=args.tail,
        remove_redundant=args.remove_redundant,
        patch_style_tags=args.patch_style_tags,
        style_tags=extra,
    )


def check_arguments(args: argparse.Namespace) -> None:
    """Every check that needs no model, before anything loads: raises the `InputError` that names the option."""
    from flowcore.models.model_source import check_config_folder, resolve_source
    from flowcore.prompts.reading import check_prompt

    options_from(args)  # --sensitivity, --tail, --mode, --style-tags
    if getattr(args, "prompt", None) is not None:
        check_prompt(args.prompt)
        if not args.prompt.strip():
            raise PromptError(
                f"The `prompt` argument is empty ({args.prompt!r}); give the prompt in quotes, e.g. "
                f'`flowcore {args.command} "a crosswalk next to a bus station with a standing zebra"`.'
            )
    if args.clip_skip < 1:
        raise OptionsError(f"`clip_skip` must be at least 1 (1 = the last layer) but is {args.clip_skip}.")
    for name, minimum in (("steps", 1), ("columns", 1), ("width", 8), ("height", 8), ("port", 1)):
        value = getattr(args, name, None)
        if value is not None and value < minimum:
            raise OptionsError(f"`--{name}` must be at least {minimum} but is {value}.")
    for name in ("width", "height"):
        value = getattr(args, name, None)
        if value is not None and value % 8:
            raise OptionsError(f"`--{name}` must be a multiple of 8 but is {value}.")
    if getattr(args, "otherwise_patch", None) is not None:
        _marked(args.prompt, args.otherwise_patch)
    if args.model is not None:
        resolve_source(args.model)
    if args.config is not None:
        check_config_folder(args.config)
    from flowcore.models.devices import resolve_device  # imports torch: after the checks that need none

    resolve_device(args.device)


def _patcher(args: argparse.Namespace, encoder):
    from flowcore.detection.progress import CalibrationBar
    from flowcore.patching.patcher import FlowPatcher

    return FlowPatcher(
        encoder,
        options=options_from(args),
        syntax=args.syntax,
        emphasis=EMPHASIS_NAMES[args.emphasis],
        calibration_progress=CalibrationBar(),  # a first run's calibration: one line and a bar on stderr
    )


def _load(args: argparse.Namespace):
    """The pipeline and a patcher over its encoder."""
    from flowcore.models.pipelines import encoder_for_pipeline, load_pipeline

    pipe = load_pipeline(args.model, config=args.config, device=args.device)
    return pipe, _patcher(args, encoder_for_pipeline(pipe, clip_skip=args.clip_skip))


def _out_dir(args: argparse.Namespace, prompt: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:60] or "prompt"
    folder = args.out or Path("flowcore-out") / slug
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _generation_kwargs(args: argparse.Namespace) -> dict:
    return {
        "steps": args.steps,
        "guidance_scale": args.guidance,
        "negative_prompt": args.negative,
        "width": args.width,
        "height": args.height,
    }


# --- the commands ---


def display_width(text: str) -> int:
    """Terminal columns `text` takes: 2 for wide characters (CJK, most emoji), 0 for combining marks."""
    width = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def _pad(text: str, width: int) -> str:
    return text + " " * (width - display_width(text))


def _rows_text(rows: list[int]) -> str:
    return f"{rows[0]}-{rows[-1]}" if len(rows) > 1 else ",".join(map(str, rows))


def format_table(result) -> str:
    """The report as a fixed-width table: one line per item (columns aligned for wide characters too). An item
    whose text occurs more than once is named with its rows ("bats @ 9-10") where it is a source."""
    from flowcore.patching.report import fixed
    from flowcore.studies.explore import token_in_word

    report = result.report
    texts = [entry.item.text for entry in report.items]
    header = ("item", "rows", "leak", "pulled by", "presence", "repr. token", "action", "why")
    lines = [header]
    for entry in report.items:
        source = "-"
        if entry.source is not None:
            source = entry.source.text
            if texts.count(source) > 1:
                rows = next((e.rows for e in report.items if e.item == entry.source), [])
                source += f" @ {_rows_text(rows)}" if rows else f" @ char {entry.source.start}"
        lines.append(
            (
                entry.item.text,
                _rows_text(entry.rows) or "-",
                fixed(entry.leak_score, signed=True) if entry.leak_score is not None else "-",
                source,
                f"{entry.presence:.3f}" if entry.presence is not None else "-",
                ", ".join(token_in_word(result, r) for r in entry.representative_rows) or "-",
                "PATCH" if entry.patched else "keep",
                entry.reason,
            )
        )
    text = []
    if len(lines) > 1:
        widths = [max(display_width(line[i]) for line in lines) for i in range(len(header) - 1)]
        text = [
            "  ".join(_pad(cell, width) for cell, width in zip(line[:-1], widths)) + "  " + line[-1] for line in lines
        ]
        text.insert(1, "-" * display_width(text[0]))
        text.append(f"threshold: {report.describe_threshold()}")
    elif not report.text.strip():
        text.append('The prompt is empty: there is nothing to analyze. Give a prompt, e.g. "a standing zebra".')
    else:
        text.append(f"No items were found in {report.text!r}: it names no noun (items are nouns with their modifiers).")
    text += [f"warning: {w}" for w in report.warnings]
    return "\n".join(text)


def report_json(result) -> dict:
    """The report, with each token's row and text, as plain data."""
    from flowcore.studies.explore import token_text

    data = result.report.to_dict()
    data["tokens"] = [
        {"row": row, "id": t.id, "text": token_text(result, row)} for row, t in result.layout.token_rows()
    ]
    return data


def cmd_analyze(args: argparse.Namespace) -> int:
    from flowcore.models.text_models import load_encoder

    encoder = load_encoder(args.model, config=args.config, device=args.device, clip_skip=args.clip_skip)
    result = _patcher(args, encoder).run(args.prompt)
    print(json.dumps(report_json(result), indent=2, ensure_ascii=False) if args.json else format_table(result))
    return 0


def _marked(prompt: str, text: str) -> str:
    """`prompt` with its first `text` marked ~text~ (`--otherwise-patch`); an `OptionsError` where it is not there."""
    if text not in prompt:
        raise OptionsError(f"`--otherwise-patch` is {text!r}, which is not in the prompt {prompt!r}; give part of it.")
    return prompt.replace(text, f"~{text}~", 1)


def cmd_compare(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from flowcore.frontends.html_report import context_shift, render_html
    from flowcore.models.pipelines import generate
    from flowcore.studies.explore import comparison

    # 1. Load the model and analyze the prompt (marking `--otherwise-patch` where nothing was patched).
    pipe, patcher = _load(args)
    result = patcher.run(args.prompt)
    print(format_table(result))
    if not result.report.patched_items and args.otherwise_patch:
        result = patcher.run(_marked(args.prompt, args.otherwise_patch))
        print(f"Nothing was patched, so `{args.otherwise_patch}` is marked and patched: {result.report.prompt}")
        print(format_table(result))

    # 2. Generate the original and the patched image with the same seed (only the original where they are equal).
    unchanged = result.original.equal(result.patched)
    if unchanged and not args.both:
        why = "Nothing was patched" if not result.report.patched_items else "The patch changed no row"
        print(
            f"{why}, so the patched image would be the original: generating it once (--both generates both). "
            "Mark an item with ~...~ to patch it anyway."
        )
    images = {}
    wanted = ("original",) if unchanged and not args.both else ("original", "patched")
    for which in tqdm(wanted, desc="images", unit="image"):
        images[which] = generate(
            pipe,
            result,
            patched=which == "patched",
            seed=args.seed,
            encoder=patcher.encoder,
            **_generation_kwargs(args),
        )

    # 3. Write the side-by-side PNG and the HTML report.
    folder = _out_dir(args, args.prompt)
    png, page = folder / "compare.png", folder / "report.html"
    comparison(result, images["original"], images.get("patched")).save(png)
    settings = {"model": args.model or "default (SD 1.5 from the hub cache)", "seed": args.seed, "steps": args.steps}
    shifts = context_shift(result, patcher)
    page.write_text(render_html(result, images["original"], images.get("patched"), shifts, settings), encoding="utf-8")
    data = folder / "report.json"
    data.write_text(json.dumps(report_json(result), indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"wrote {png}\nwrote {page}\nwrote {data}")
    return 0


def cmd_explore(args: argparse.Namespace) -> int:
    from flowcore.studies.explore import explore

    pipe, patcher = _load(args)
    grid, subsets = explore(
        pipe,
        patcher,
        args.prompt,
        seed=args.seed,
        items=not args.no_items,
        tokens=not args.no_tokens,
        columns=args.columns,
        **_generation_kwargs(args),
    )
    path = _out_dir(args, args.prompt) / "explore.png"
    grid.save(path)
    print(f"{len(subsets)} images: " + "; ".join(s.label for s in subsets))
    print(f"wrote {path}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from flowcore.frontends.app import build_app

    pipe, patcher = _load(args)
    app = build_app(pipe, patcher)
    print(f"Follow the Flow UI on http://{args.host}:{args.port}")
    app.launch(server_name=args.host, server_port=args.port)
    return 0


COMMANDS = {"analyze": cmd_analyze, "compare": cmd_compare, "explore": cmd_explore, "ui": cmd_ui}


def error_line(error: FlowcoreError) -> str:
    """The error as one line, with Python argument names as this command's options (`clip_skip` ->
    `--clip-skip`)."""
    text = " ".join(str(error).split())
    for name, option in OPTION_NAMES.items():
        text = text.replace(f"`{name}`", f"`{option}`")
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the `flowcore` command; returns the exit status: 0 ok, 2 a bad argument (named in one line), 1 a
    failure while running."""
    # OpenMP threads that spin while they wait (the default) lose whole time slices to any other process on the
    # cores: a first run's calibration took 3x as long on a shared 2-core CPU (`benchmarks/first_run.py`). Set
    # before torch loads; a value of the user's own stays.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        check_arguments(args)
        return COMMANDS[args.command](args)
    except FlowcoreError as error:
        print(f"flowcore: error: {error_line(error)}", file=sys.stderr)
        return error.exit_status


if __name__ == "__main__":
    sys.exit(main())
