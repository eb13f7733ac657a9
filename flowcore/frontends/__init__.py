"""Front ends: what a user runs. Layer 7, the top: nothing in flowcore imports it.

- `cli`: the `flowcore` command (analyze, compare, explore, report, ui); `app`: the Gradio app;
  `html_report`: a self-contained HTML page for one prompt.

May import: every layer below.
"""
