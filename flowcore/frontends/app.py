"""A Gradio app (`flowcore ui`): type a prompt, see its items and leak scores, choose which items to patch,
and generate the original and the patched image with the same seed. Gradio is imported only here.

Per-item choices become prompt markers (`~item~` patch, `^item^` keep), so the app drives the same
`FlowPatcher.run` as the CLI and the WebUI extension.
"""

from __future__ import annotations

import os

from flowcore.patching.patcher import FlowPatcher
from flowcore.patching.report import FlowResult
from flowcore.prompts.items import LexicalItem

TABLE_HEADERS = ["item", "rows", "leak score", "pulled by", "presence", "auto decision", "why"]


def mark_items(text: str, items: list[LexicalItem], patch: set[str]) -> str:
    """`text` with every item marked: `~item~` where its text is in `patch`, `^item^` otherwise."""
    pieces, position = [], 0
    for item in sorted(items, key=lambda item: item.start):
        marker = "~" if item.text in patch else "^"
        pieces += [text[position : item.start], marker, text[item.start : item.end], marker]
        position = item.end
    pieces.append(text[position:])
    return "".join(pieces)


def table_rows(result: FlowResult) -> list[list]:
    """The report as rows for the app's table."""
    rows = []
    for entry in result.report.items:
        rows.append(
            [
                entry.item.text,
                ", ".join(map(str, entry.rows)),
                round(entry.leak_score, 4) if entry.leak_score is not None else None,
                entry.source.text if entry.source else "",
                round(entry.presence, 3) if entry.presence is not None else None,
                "patch" if entry.patched else "keep",
                entry.reason,
            ]
        )
    return rows


def build_app(pipe, patcher: FlowPatcher, steps: int = 25, size: int | None = None):
    """The Gradio Blocks app over a loaded pipeline and its patcher (call `.launch()` on it)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from flowcore.models.pipelines import generate

    def analyze(prompt: str):
        result = patcher.run(prompt)
        names = [entry.item.text for entry in result.report.items if entry.rows]
        chosen = [entry.item.text for entry in result.report.items if entry.patched]
        return table_rows(result), gr.update(choices=names, value=chosen), result.report.summary()

    def compare(prompt: str, patch: list[str], seed: float, steps: float):
        # 1. Turn the per-item choices into markers and patch.
        report = patcher.run(prompt).report
        items = [entry.item for entry in report.items if entry.rows]
        result = patcher.run(mark_items(report.text, items, set(patch or [])))
        # 2. Generate both images with the same seed.
        common = {"seed": int(seed), "steps": int(steps), "encoder": patcher.encoder, "progress": False}
        if size:
            common.update(width=size, height=size)
        original = generate(pipe, result, patched=False, **common)
        patched = generate(pipe, result, patched=True, **common)
        return original, patched, result.report.summary()

    with gr.Blocks(title="Follow the Flow") as app:
        gr.Markdown(
            "## Follow the Flow\nFind prompt items whose encoding leaked toward another item, and patch them "
            "with their own encoding. Mark items in the prompt: `~item~` always patch, `^item^` never."
        )
        prompt = gr.Textbox(
            label="Prompt", value="a crosswalk next to a bus station with a standing zebra", elem_id="prompt"
        )
        with gr.Row():
            analyze_button = gr.Button("Analyze", elem_id="analyze")
            compare_button = gr.Button("Generate original vs patched", variant="primary", elem_id="generate")
        with gr.Row():
            seed = gr.Number(label="Seed", value=0, precision=0, elem_id="seed")
            step_count = gr.Slider(1, 100, value=steps, step=1, label="Steps", elem_id="steps")
        table = gr.Dataframe(headers=TABLE_HEADERS, label="Items", interactive=False, elem_id="items")
        patch = gr.CheckboxGroup(label="Patch these items", choices=[], elem_id="patch")
        summary = gr.Textbox(label="Report", lines=4, elem_id="summary")
        with gr.Row():
            original = gr.Image(label="Original", type="pil", elem_id="original")
            patched = gr.Image(label="Patched", type="pil", elem_id="patched")
        analyze_button.click(analyze, inputs=prompt, outputs=[table, patch, summary])
        prompt.submit(analyze, inputs=prompt, outputs=[table, patch, summary])
        compare_button.click(compare, inputs=[prompt, patch, seed, step_count], outputs=[original, patched, summary])
    return app
