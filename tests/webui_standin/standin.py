"""Build a WebUI stand-in with a tiny random-weight model and drive a txt2img through it.

    import standin
    webui = standin.WebUI("sd1")            # or "sd2", "sdxl", "forge-sd15", "forge-sdxl",
                                            # "forge-sd35", "forge-flux", "forge-flux-schnell"
    webui.add_script(MyScript)              # or webui.load_script_file(path)
    res = webui.txt2img(prompt="a cat AND a dog", steps=4,
                        alwayson={"my script": [True, 0.5]})
    first, = res.sampling_records           # what the sampler got (see processing.SamplingRecord)

``install()`` puts this folder on ``sys.path`` and a fake ``gradio`` in ``sys.modules`` when the
real one is missing. ``reset()`` clears the class-level cond caches, callbacks, settings and
registered scripts (call it between tests)."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def _webui_gradio_installed() -> bool:
    """True only for gradio 3.x (the WebUI v1.10.1 pins gradio==3.41.2); newer gradio differs
    (no ``_js``, components need a Blocks context, other update semantics)."""
    try:
        version = importlib.metadata.version("gradio")
    except importlib.metadata.PackageNotFoundError:
        return False
    return version.split(".")[0] == "3"


def install():
    """Make ``modules``, ``launch`` and ``gradio`` importable: the real gradio when it is the
    WebUI's 3.x, else the stand-in ``fake_gradio``."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    if not _webui_gradio_installed():
        import fake_gradio

        sys.modules["gradio"] = fake_gradio


install()

import extra_networks_lora  # noqa: E402
import forge_standin  # noqa: E402
import networks  # noqa: E402
import open_clip_text  # noqa: E402
import torch  # noqa: E402
from modules import errors, extra_networks, processing, prompt_parser, script_callbacks, scripts, sd_hijack, shared  # noqa: E402
from modules.sd_models import StandinSD1Model, StandinSD2Model  # noqa: E402
from modules.sd_models_xl import StandinSDXLModel  # noqa: E402
from modules.textual_inversion import textual_inversion  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer  # noqa: E402

# ------------------------------------------------------------------------------------------
# tokenizer
# ------------------------------------------------------------------------------------------


def build_clip_tokenizer(bpe_path=None) -> CLIPTokenizer:
    """The real CLIP BPE tokenizer (49408 entries, OpenAI's ids), shared with flowcore's tests."""
    from flowcore.testing import clip_tokenizer

    return clip_tokenizer(bpe_path)


@functools.lru_cache(maxsize=1)
def shared_tokenizer() -> CLIPTokenizer:
    return build_clip_tokenizer()


# ------------------------------------------------------------------------------------------
# tiny models
# ------------------------------------------------------------------------------------------


def clip_config(hidden_size=32, layers=2, heads=4, intermediate=37, projection_dim=None, act="quick_gelu"):
    kw = dict(
        hidden_size=hidden_size,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        vocab_size=49408,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_act=act,
    )
    if projection_dim is not None:
        kw["projection_dim"] = projection_dim
    return CLIPTextConfig(**kw)


def _randomize_layer_norms(model, seed):
    """Freshly initialized LayerNorms (weight 1, bias 0) make every output row's mean ~0, so the WebUI's
    "Original" emphasis rescale (old mean / new mean) divides ~0 by ~0 and gives NaN; trained CLIPs have
    non-zero biases. Give the tiny models trained-like LayerNorm parameters."""
    generator = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.5 * torch.randn(module.bias.shape, generator=generator))
    return model


def tiny_clip(seed=0, **kw) -> CLIPTextModel:
    torch.manual_seed(seed)
    return _randomize_layer_norms(CLIPTextModel(clip_config(**kw)).eval(), seed)


def tiny_clip_with_projection(seed=1, **kw) -> CLIPTextModelWithProjection:
    torch.manual_seed(seed)
    return _randomize_layer_norms(CLIPTextModelWithProjection(clip_config(**kw)).eval(), seed)


def tiny_open_clip(seed=0, width=48, layers=3, heads=4, embed_dim=None) -> open_clip_text.CLIP:
    """An open_clip text tower (SD2: ViT-H-14, 1024 wide, 24 layers; SDXL G: ViT-bigG-14, 1280, 32)."""
    torch.manual_seed(seed)
    model = open_clip_text.CLIP(embed_dim or width, width, layers, heads).eval()
    return _randomize_layer_norms(model, seed)


def make_sd1_model(seed=0, hidden_size=32, layers=2, name="standin-sd1") -> StandinSD1Model:
    """``name`` is the checkpoint name: it is part of the cond cache key."""
    return StandinSD1Model(shared_tokenizer(), tiny_clip(seed, hidden_size=hidden_size, layers=layers), name=name)


def make_sd2_model(seed=0, width=40, layers=3, heads=4, name="standin-sd2") -> StandinSD2Model:
    """Conds (B, 77k, width) (SD2: 1024) from the penultimate block + ``ln_final``."""
    return StandinSD2Model(shared_tokenizer(), tiny_open_clip(seed, width=width, layers=layers, heads=heads), name=name)


def make_sdxl_model(seed=0, dim_l=32, dim_g=48, layers=3, size_dim=8, name="standin-sdxl") -> StandinSDXLModel:
    """crossattn width dim_l + dim_g (SDXL: 768 + 1280), vector width dim_g + 3 * 2 * size_dim
    (SDXL: 1280 + 3 * 512). Both encoders have ``layers`` layers, so "penultimate" is real.
    CLIP-L is an HF ``CLIPTextModel``, G an open_clip text tower (``tiny_open_clip``)."""
    clip_l = tiny_clip(seed, hidden_size=dim_l, layers=layers)
    clip_g = tiny_open_clip(seed + 1, width=dim_g, layers=layers, heads=4, embed_dim=dim_g)
    return StandinSDXLModel(shared_tokenizer(), clip_l, clip_g, size_dim=size_dim, name=name)


# ------------------------------------------------------------------------------------------
# the WebUI
# ------------------------------------------------------------------------------------------


def reset(forge=False):
    """Forget everything a previous test left behind (the real WebUI never does this). ``forge``: the
    state Forge starts with (three-element cond caches, no A1111 Lora callback, empty embeddings folder,
    no loaded models)."""
    empty = [None, None, None] if forge else [None, None]
    processing.StableDiffusionProcessing.cached_c = list(empty)
    processing.StableDiffusionProcessing.cached_uc = list(empty)
    processing.StableDiffusionProcessingTxt2Img.cached_hr_c = list(empty)
    processing.StableDiffusionProcessingTxt2Img.cached_hr_uc = list(empty)
    processing.sampling_records.clear()
    extra_networks.activations.clear()
    script_callbacks.clear_callbacks()
    scripts.scripts_data.clear()
    errors.reported.clear()
    shared.reset_opts()
    sd_hijack.model_hijack.clear_comments()
    sd_hijack.model_hijack.fixes = None
    sd_hijack.model_hijack.embedding_db.standin_clear()
    networks.clear()
    # what the built-in Lora extension registers at startup
    networks.install_patches()
    extra_networks.initialize()
    extra_networks.register_extra_network(extra_networks_lora.ExtraNetworkLora())
    if forge:
        forge_standin.reset()
    else:
        script_callbacks.on_model_loaded(networks.assign_network_names_to_compvis_modules)


class WebUI:
    """One stand-in WebUI: a loaded model (``shared.sd_model``), registered scripts, a txt2img."""

    def __init__(self, family="sd1", *, model=None, seed=0, with_xyz_grid=True, fresh=True):
        self.forge = family.startswith("forge-") or (model is not None and forge_standin.is_forge_model(model))
        if fresh:
            reset(forge=self.forge)
        if model is None:
            if self.forge:
                model = forge_standin.make_model(family, seed)
            else:
                model = {"sd1": make_sd1_model, "sd2": make_sd2_model, "sdxl": make_sdxl_model}[family](seed)
        self.model = model
        shared.sd_model = model
        if self.forge:
            # sd_models.forge_model_reload: the engines read the embeddings folder when built
            script_callbacks.model_loaded_callback(model)
        else:
            sd_hijack.model_hijack.hijack(model)
            # what loading a checkpoint does: model_loaded callbacks (Lora layer names), embeddings reloaded
            script_callbacks.model_loaded_callback(model)
            sd_hijack.model_hijack.embedding_db.load_textual_inversion_embeddings(force_reload=True)
        self.runner: scripts.ScriptRunner | None = None
        if with_xyz_grid:
            scripts.load_script_file(str(HERE / "builtin_scripts" / "xyz_grid.py"))

    # scripts ------------------------------------------------------------------------------
    def add_script(self, script_class, path=None):
        """Register a Script class as if its file had been loaded from an extension."""
        module = sys.modules.get(script_class.__module__)
        path = path or getattr(module, "__file__", None) or f"{script_class.__module__}.py"
        scripts.scripts_data.append(scripts.ScriptClassData(script_class, path, os.path.dirname(path), module))

    def load_script_file(self, path):
        return scripts.load_script_file(str(path))

    def build_ui(self, is_img2img=False) -> scripts.ScriptRunner:
        """``initialize_scripts`` + ``setup_ui`` (+ fires ``on_ui_settings``), like startup."""
        runner = scripts.ScriptRunner()
        runner.initialize_scripts(is_img2img)
        runner.setup_ui()
        script_callbacks.ui_settings_callback()
        scripts.scripts_txt2img = runner
        self.runner = runner
        return runner

    def script_args(self, alwayson: dict | None = None) -> list:
        """Default args from every ``ui()``, then the given ``{title: [args...]}`` laid over
        them positionally (a partial list is allowed), as ``/sdapi/v1/txt2img`` does."""
        runner = self.runner or self.build_ui()
        args = runner.default_script_args()
        for title, values in (alwayson or {}).items():
            script = runner.script(title)
            if script is None or not script.alwayson:
                raise KeyError(f"always on script {title} not found")
            for i in range(min(script.args_to - script.args_from, len(values))):
                args[script.args_from + i] = values[i]
        return args

    def make_p(self, alwayson=None, script_args=None, **kwargs) -> processing.StableDiffusionProcessingTxt2Img:
        kwargs.setdefault("width", 64)
        kwargs.setdefault("height", 64)
        kwargs.setdefault("steps", 3)
        kwargs.setdefault("seed", 1)
        p = processing.StableDiffusionProcessingTxt2Img(sd_model=shared.sd_model, **kwargs)
        runner = self.runner or self.build_ui()
        p.is_api = True
        p.scripts = runner
        p.script_args = tuple(script_args if script_args is not None else self.script_args(alwayson))
        return p

    def txt2img(self, alwayson=None, script_args=None, **kwargs) -> processing.Processed:
        """A whole generation as the API runs it: ``with closing(p): process_images(p)``."""
        p = self.make_p(alwayson=alwayson, script_args=script_args, **kwargs)
        with contextlib.closing(p):
            res = processing.process_images(p)
        res.p = p
        return res

    def xyz_grid_module(self):
        """Find the built-in X/Y/Z module the way extensions do."""
        return next(d.module for d in scripts.scripts_data if d.script_class.__module__ == "xyz_grid.py")

    def count_tokens(self, text, steps=20, is_positive=True):
        """The UI's token counter: ``on_before_token_counter`` callbacks, then AND split,
        schedules, and ``(token_count, target)`` of the longest schedule text."""
        params = script_callbacks.BeforeTokenCounterParams(text, steps, [], is_positive=is_positive)
        script_callbacks.before_token_counter_callback(params)
        text, _ = extra_networks.parse_prompt(params.prompt)
        flat = prompt_parser.get_multicond_prompt_list([text])[1] if params.is_positive else [text]
        try:
            schedules = prompt_parser.get_learned_conditioning_prompt_schedules(flat, params.steps)
        except Exception:
            schedules = [[[params.steps, text]]]
        texts = [t for schedule in schedules for _, t in schedule]
        if self.forge:  # Forge's model_hijack.get_prompt_lengths -> sd_model.get_prompt_lengths_on_ui
            return max((shared.sd_model.get_prompt_lengths_on_ui(t) for t in texts), key=lambda x: x[0])
        return max((sd_hijack.model_hijack.get_prompt_lengths(t) for t in texts), key=lambda x: x[0])


def add_embedding(name, vectors=1, seed=0, scale=0.5, model=None) -> textual_inversion.Embedding:
    """Put a textual-inversion embedding ``name`` with ``vectors`` random vectors (N(0, scale^2),
    from ``seed``) for the loaded model's encoders into the embeddings folder and reload it (as the
    WebUI does when the folder changes: every embedding object is created anew); returns the new
    ``Embedding`` (or the skipped one when its width does not fit the model). Its ``vec`` is
    ``(vectors, dim)`` (SD1/SD2) or ``{"clip_l": (vectors, dim_l), "clip_g": (vectors, dim_g)}`` (SDXL)."""
    model = model or shared.sd_model
    if forge_standin.is_forge_model(model):
        return forge_standin.add_embedding(model, name, vectors=vectors, seed=seed, scale=scale)
    generator = torch.Generator().manual_seed(seed)

    def width(token_embedding):
        return token_embedding.wrapped.embedding_dim

    if getattr(model, "is_sdxl", False):
        embedder_l, embedder_g = model.conditioner.embedders[0], model.conditioner.embedders[1]
        dim_l = width(embedder_l.wrapped.transformer.get_input_embeddings())
        dim_g = width(embedder_g.wrapped.model.token_embedding)
        data = {
            "clip_l": scale * torch.randn(vectors, dim_l, generator=generator),
            "clip_g": scale * torch.randn(vectors, dim_g, generator=generator),
        }
    else:
        wrapped = model.cond_stage_model.wrapped
        if hasattr(wrapped, "transformer"):
            dim = width(wrapped.transformer.get_input_embeddings())
        else:
            dim = width(wrapped.model.token_embedding)
        data = {"string_to_param": {"*": scale * torch.randn(vectors, dim, generator=generator)}}
    db = sd_hijack.model_hijack.embedding_db
    db.standin_files[f"{name}.safetensors"] = data
    db.standin_files_changed = True
    db.load_textual_inversion_embeddings()
    return db.word_embeddings.get(name) or db.skipped_embeddings[name]


def add_lora(name, seed=0, rank=4, scale=0.1) -> networks.NetworkOnDisk:
    """Put a synthetic LoRA ``name`` into the Lora folder: ``<lora:name:m>`` then adds
    ``m * scale * up @ down`` (rank ``rank``, from ``seed`` and each layer's name) to every Linear
    and MultiheadAttention of the text encoders (see ``networks``). Forge mode: the same folder entry;
    ``<lora:name:m>`` gives the clip patcher patches that ``load_model_gpu`` merges (``forge_standin``)."""
    return networks.register_network(name, seed=seed, rank=rank, scale=scale)


def text_encoder(model=None):
    """The object with ``tokenize_line``: A1111 SD1/SD2 ``cond_stage_model``, SDXL
    ``conditioner.embedders[0]`` (CLIP-L); Forge the CLIP-L ``ClassicTextProcessingEngine``."""
    model = model or shared.sd_model
    if forge_standin.is_forge_model(model):
        return forge_standin.text_engines(model)[0]
    if getattr(model, "is_sdxl", False):
        return model.conditioner.embedders[0]
    return model.cond_stage_model
