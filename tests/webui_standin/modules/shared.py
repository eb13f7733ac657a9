"""Stand-in for ``modules/shared.py`` (+ the settings of ``shared_options.py`` the glue meets).

``opts`` is an ``Options`` object: read settings as attributes, add new ones with
``opts.add_option(key, OptionInfo(...))`` (extensions do it from ``script_callbacks.on_ui_settings``).
``reset_opts()`` restores the defaults (tests call it between cases)."""

from __future__ import annotations

import types

from modules import devices
from modules.options import OptionHTML, OptionInfo, Options, options_section  # noqa: F401

cmd_opts = types.SimpleNamespace(
    no_half=True,
    use_cpu=["all"],
    api=False,
    freeze_settings=False,
    no_prompt_history=True,
    embeddings_dir="",
    lowvram=False,
    medvram=False,
)
device = devices.device


def _builtin_options() -> dict[str, OptionInfo]:
    templates: dict[str, OptionInfo] = {}
    templates.update(
        options_section(
            ("sd", "Stable Diffusion", "sd"),
            {
                "sd_model_checkpoint": OptionInfo(None, "Stable Diffusion checkpoint"),
                "emphasis": OptionInfo("Original", "Emphasis mode", infotext="Emphasis"),
                "enable_batch_seeds": OptionInfo(
                    True, "Make K-diffusion samplers produce same images in a batch as when making a single image"
                ),
                "comma_padding_backtrack": OptionInfo(
                    20, "Prompt word wrap length limit", None, {"minimum": 0, "maximum": 74, "step": 1}
                ),
                "sdxl_clip_l_skip": OptionInfo(False, "Clip skip SDXL"),
                "CLIP_stop_at_last_layers": OptionInfo(
                    1, "Clip skip", None, {"minimum": 1, "maximum": 12, "step": 1}, infotext="Clip skip"
                ),
                "upcast_attn": OptionInfo(False, "Upcast cross attention layer to float32"),
                "randn_source": OptionInfo("GPU", "Random number generator source.", infotext="RNG"),
                "tiling": OptionInfo(False, "Tiling", infotext="Tiling"),
                "hires_fix_refiner_pass": OptionInfo(
                    "second pass", "Hires fix: which pass to enable refiner for", infotext="Hires refiner"
                ),
                "enable_prompt_comments": OptionInfo(True, "Enable comments"),
            },
        )
    )
    templates.update(
        options_section(
            ("sdxl", "Stable Diffusion XL", "sd"),
            {
                "sdxl_crop_top": OptionInfo(0, "crop top coordinate"),
                "sdxl_crop_left": OptionInfo(0, "crop left coordinate"),
                "sdxl_refiner_low_aesthetic_score": OptionInfo(2.5, "SDXL low aesthetic score"),
                "sdxl_refiner_high_aesthetic_score": OptionInfo(6.0, "SDXL high aesthetic score"),
            },
        )
    )
    templates.update(
        options_section(
            ("sd3", "Stable Diffusion 3", "sd"),
            {"sd3_enable_t5": OptionInfo(False, "Enable T5")},
        )
    )
    templates.update(
        options_section(
            ("optimizations", "Optimizations", "sd"),
            {
                "persistent_cond_cache": OptionInfo(True, "Persistent cond cache"),
                "fp8_storage": OptionInfo("Disable", "FP8 weight", infotext="FP8 weight"),
                "cache_fp16_weight": OptionInfo(False, "Cache FP16 weight for LoRA"),
                "token_merging_ratio": OptionInfo(0.0, "Token merging ratio", infotext="Token merging ratio"),
                "token_merging_ratio_hr": OptionInfo(
                    0.0, "Token merging ratio for high-res pass", infotext="Token merging ratio hr"
                ),
            },
        )
    )
    templates.update(
        options_section(
            ("compatibility", "Compatibility", "sd"),
            {
                "use_old_emphasis_implementation": OptionInfo(False, "Use old emphasis implementation."),
                "use_old_karras_scheduler_sigmas": OptionInfo(False, "Use old karras scheduler sigmas (0.1 to 10)."),
                "hires_fix_use_firstpass_conds": OptionInfo(
                    False, "For hires fix, calculate conds of second pass using extra networks of first pass."
                ),
                "use_old_scheduling": OptionInfo(
                    False, "Use old prompt editing timelines.", infotext="Old prompt editing timelines"
                ),
                "use_old_hires_fix_width_height": OptionInfo(
                    False, "For hires fix, use width/height sliders to set final resolution rather than first pass"
                ),
                "refiner_switch_by_sample_steps": OptionInfo(
                    False, "Switch to refiner by sampling steps instead of model timesteps."
                ),
            },
        )
    )
    templates.update(
        options_section(
            ("extra_networks", "Extra Networks", "sd"),
            {
                "extra_networks_default_multiplier": OptionInfo(1.0, "Default multiplier for extra networks"),
                "sd_lora": OptionInfo("None", "Add network to prompt"),
                "lora_add_hashes_to_infotext": OptionInfo(True, "Add Lora hashes to infotext"),
                "lora_in_memory_limit": OptionInfo(0, "Number of Lora networks to keep cached in memory"),
                "lora_functional": OptionInfo(False, "Lora/Networks: use old method (not in the stand-in)"),
            },
        )
    )
    templates.update(
        options_section(
            ("training", "Textual Inversion", "training"),
            {"textual_inversion_add_hashes_to_infotext": OptionInfo(True, "Add Textual Inversion hashes to infotext")},
        )
    )
    templates.update(
        options_section(
            ("ui", "User Interface", "ui"),
            {"include_styles_into_token_counters": OptionInfo(True, "Count tokens of enabled styles")},
        )
    )
    return templates


options_templates: dict[str, OptionInfo] = _builtin_options()
opts = Options(options_templates, set())


def reset_opts():
    """Back to the built-in settings (options added by extensions are dropped)."""
    global options_templates
    options_templates = _builtin_options()
    opts.data_labels = options_templates
    opts.data = {k: v.default for k, v in options_templates.items() if not v.do_not_save}


sd_model = None
"""The loaded model (set by ``standin.WebUI``)."""


class _State:
    def __init__(self):
        self.interrupted = False
        self.skipped = False
        self.stopping_generation = False
        self.job = ""
        self.job_count = -1

    def begin(self, job="(unknown)"):
        self.job = job

    def end(self):
        self.job = ""

    def nextjob(self):
        pass


state = _State()


class _PromptStyles:
    def apply_styles_to_prompt(self, prompt, styles):
        return prompt

    def apply_negative_styles_to_prompt(self, prompt, styles):
        return prompt


prompt_styles = _PromptStyles()


class _TotalTqdm:
    def clear(self):
        pass


total_tqdm = _TotalTqdm()
