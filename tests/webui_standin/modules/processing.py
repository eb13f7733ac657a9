"""Stand-in for ``modules/processing.py`` (txt2img): the real order of script hooks, the real
cond caching (class-level cache lists shared by every run), and a fake sampler that records the
conds it sampled with.

Each sampling pass appends a ``SamplingRecord`` to ``p.sampling_records`` (and to the module list
``sampling_records``): deep copies of ``c``/``uc`` as they were when sampling started, and the
batched tensors the UNet would see at every step (after ``on_cfg_denoiser`` callbacks).

Forge mode (a Forge engine is loaded, see ``forge_standin``): Forge's ``modules/processing.py`` where it
differs -- extra fields (``distilled_cfg_scale``, ``hr_cfg`` (default 1.0), ``hr_distilled_cfg``,
``hr_additional_modules``), three-element cond caches ``[params, conds, extra_generation_params]``
(``close`` still resets them to two elements, as Forge does), ``set_clip_skip`` and
``classic_engine.last_extra_generation_params`` around each cond computation (into
``sd_model.extra_generation_params``, replayed on cache hits), ``uc`` None when ``cfg_scale == 1``
(``hr_uc`` None when ``hr_cfg == 1``), hires conds computed in ``setup_conds`` (with the hires extra
networks activated, then the first pass's again), ``torch.inference_mode()`` around the batch loop,
``forge_objects`` reset from ``forge_objects_original`` / ``forge_objects_after_applying_lora``, and
``process_before_every_sampling`` twice in the hires pass (after ``before_hr``, then again after
``forge_objects`` is reset)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch

from modules import devices, errors, extra_networks, prompt_parser, script_callbacks, scripts, shared
from modules.sd_hijack import model_hijack
from modules.shared import opts

opt_C = 4
opt_f = 8


@dataclasses.dataclass
class SamplingRecord:
    pass_name: str  # "first" or "hires"
    iteration: int
    steps: int
    c: Any  # deep copy of the MulticondLearnedConditioning sampled with
    uc: Any  # deep copy of the list of schedules sampled with
    text_cond: list  # per step: the batched cond tensor (or dict) the UNet got
    text_uncond: list  # per step: the batched uncond tensor (or dict)
    conds_list: list  # per step: [(row, weight) per AND part] per image
    refiner_switched: bool = False
    cfg_scale: float | None = None  # the guidance scale of the pass (Forge's hires pass: p.hr_cfg)
    inference_mode: bool = False  # whether sampling ran under torch.inference_mode() (Forge)


def _forge() -> bool:
    """Forge mode: the loaded model is a Forge diffusion engine."""
    return hasattr(shared.sd_model, "forge_objects_original")


sampling_records: list[SamplingRecord] = []


def _clone(x):
    if isinstance(x, dict):
        return {k: v.detach().clone() for k, v in x.items()}
    return x.detach().clone()


class StandinSampler:
    """Walks the steps like the CFG denoiser: per step reconstructs the batched conds with
    ``prompt_parser.reconstruct_*`` (step counted from 0), fires ``on_cfg_denoiser`` and records.
    Applies the refiner switch (``p.refiner_checkpoint_info`` + ``refiner_switch_at``) by
    calling ``p.setup_conds()`` mid-sampling without ``process_before_every_sampling``, as
    ``sd_samplers_common.apply_refiner`` does."""

    def __init__(self, p):
        self.p = p

    def _run(self, pass_name, x, c, uc, steps):
        p = self.p
        record = SamplingRecord(pass_name, p.iteration, steps, copy.deepcopy(c), copy.deepcopy(uc), [], [], [])
        record.inference_mode = torch.is_inference_mode_enabled()
        record.cfg_scale = p.hr_cfg if (_forge() and p.is_hr_pass) else p.cfg_scale
        for step in range(steps):
            if self._refiner_due(record, step, steps):
                shared.sd_model = p.refiner_checkpoint_info
                script_callbacks.model_loaded_callback(shared.sd_model)  # reload_model_weights does
                p.setup_conds()
                c, uc = p.get_conds()
                record.refiner_switched = True
            conds_list, tensor = prompt_parser.reconstruct_multicond_batch(c, step)
            uncond = prompt_parser.reconstruct_cond_batch(uc, step) if uc is not None else None
            params = script_callbacks.CFGDenoiserParams(x, None, torch.ones(x.shape[0]), step, steps, tensor, uncond)
            script_callbacks.cfg_denoiser_callback(params)
            record.conds_list.append(conds_list)
            record.text_cond.append(_clone(params.text_cond))
            record.text_uncond.append(None if params.text_uncond is None else _clone(params.text_uncond))
        p.sampling_records.append(record)
        sampling_records.append(record)
        return x.clone()

    def _refiner_due(self, record, step, steps):
        p = self.p
        if p.refiner_checkpoint_info is None or p.refiner_switch_at is None or record.refiner_switched:
            return False
        return step / steps >= p.refiner_switch_at and shared.sd_model is not p.refiner_checkpoint_info

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        return self._run("first", x, conditioning, unconditional_conditioning, steps or p.steps)

    def sample_img2img(
        self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None
    ):
        return self._run("hires", x, conditioning, unconditional_conditioning, steps or p.steps)


class _Rng:
    def __init__(self, shape, seeds):
        self.shape = shape
        self.seeds = seeds

    def next(self):
        return torch.stack(
            [torch.randn(self.shape, generator=torch.Generator().manual_seed(int(s))) for s in self.seeds]
        )


_FIELDS: dict[str, Any] = dict(
    sd_model=None,
    outpath_samples=None,
    outpath_grids=None,
    prompt="",
    prompt_for_display=None,
    negative_prompt="",
    styles=None,
    seed=-1,
    subseed=-1,
    subseed_strength=0,
    seed_resize_from_h=-1,
    seed_resize_from_w=-1,
    seed_enable_extras=True,
    sampler_name=None,
    scheduler=None,
    batch_size=1,
    n_iter=1,
    steps=50,
    cfg_scale=7.0,
    width=512,
    height=512,
    restore_faces=None,
    tiling=None,
    do_not_save_samples=False,
    do_not_save_grid=False,
    extra_generation_params=None,
    overlay_images=None,
    eta=None,
    do_not_reload_embeddings=False,
    denoising_strength=None,
    override_settings=None,
    override_settings_restore_afterwards=True,
    refiner_checkpoint=None,
    refiner_switch_at=None,
    disable_extra_networks=False,
    firstpass_image=None,
    script_args=None,
)


_FORGE_FIELDS: dict[str, Any] = dict(distilled_cfg_scale=3.5)


class StableDiffusionProcessing:
    cached_uc = [None, None]
    cached_c = [None, None]
    _fields = _FIELDS
    _forge_fields = _FORGE_FIELDS

    def __init__(self, **kwargs):
        fields = dict(self._fields, **self._forge_fields) if _forge() else self._fields
        unknown = set(kwargs) - set(fields)
        if unknown:
            raise TypeError(f"unexpected keyword arguments: {sorted(unknown)}")
        self.scripts_value = None
        self.script_args_value = None
        self.scripts_setup_complete = False
        for name, default in fields.items():
            if name in ("sd_model", "script_args"):
                continue
            setattr(self, name, kwargs.get(name, copy.copy(default)))
        self.comments = {}
        self.styles = self.styles or []
        self.extra_generation_params = self.extra_generation_params or {}
        self.override_settings = self.override_settings or {}
        self.script_args = kwargs.get("script_args") or {}
        self.refiner_checkpoint_info = None
        self.sampler = None
        self.is_hr_pass = False
        self.c = None
        self.uc = None
        self.rng = None
        self.step_multiplier = 1
        self.all_prompts = self.all_negative_prompts = self.all_seeds = self.all_subseeds = None
        self.iteration = 0
        self.main_prompt = self.main_negative_prompt = None
        self.prompts = self.negative_prompts = self.seeds = self.subseeds = None
        self.extra_network_data = None
        self.is_api = False
        self.sampling_records: list[SamplingRecord] = []
        self.modified_noise = None  # Forge: a script may set the noise for the next sampling
        if not self.seed_enable_extras:
            self.subseed, self.subseed_strength, self.seed_resize_from_h, self.seed_resize_from_w = -1, 0, 0, 0
        # instance attributes pointing at the class-level lists: every run shares them
        self.cached_uc = StableDiffusionProcessing.cached_uc
        self.cached_c = StableDiffusionProcessing.cached_c

    @property
    def sd_model(self):
        return shared.sd_model

    @sd_model.setter
    def sd_model(self, value):
        pass

    @property
    def scripts(self):
        return self.scripts_value

    @scripts.setter
    def scripts(self, value):
        self.scripts_value = value
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    @property
    def script_args(self):
        return self.script_args_value

    @script_args.setter
    def script_args(self, value):
        self.script_args_value = value
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    def setup_scripts(self):
        self.scripts_setup_complete = True
        self.scripts.setup_scrips(self, is_ui=not self.is_api)

    def comment(self, text):
        self.comments[text] = 1

    def clear_prompt_cache(self):
        """Forge only: empty the first-pass cond caches (three-element lists)."""
        self.cached_c = [None, None, None]
        self.cached_uc = [None, None, None]
        StableDiffusionProcessing.cached_c = [None, None, None]
        StableDiffusionProcessing.cached_uc = [None, None, None]

    def init(self, all_prompts, all_seeds, all_subseeds):
        pass

    def close(self):
        self.sampler = None
        self.c = None
        self.uc = None
        if not opts.persistent_cond_cache:
            StableDiffusionProcessing.cached_c = [None, None]
            StableDiffusionProcessing.cached_uc = [None, None]

    def setup_prompts(self):
        if isinstance(self.prompt, list):
            self.all_prompts = self.prompt
        elif isinstance(self.negative_prompt, list):
            self.all_prompts = [self.prompt] * len(self.negative_prompt)
        else:
            self.all_prompts = self.batch_size * self.n_iter * [self.prompt]
        if isinstance(self.negative_prompt, list):
            self.all_negative_prompts = self.negative_prompt
        else:
            self.all_negative_prompts = [self.negative_prompt] * len(self.all_prompts)
        if len(self.all_prompts) != len(self.all_negative_prompts):
            raise RuntimeError(
                f"Received a different number of prompts ({len(self.all_prompts)}) "
                f"and negative prompts ({len(self.all_negative_prompts)})"
            )
        self.main_prompt = self.all_prompts[0]
        self.main_negative_prompt = self.all_negative_prompts[0]

    def cached_params(self, required_prompts, steps, extra_network_data, hires_steps=None, use_old_scheduling=False):
        """Everything that invalidates the cond cache (compared with ``==``); Forge adds the distilled
        CFG scales after the prompts."""
        forge = (self.distilled_cfg_scale, self.hr_distilled_cfg) if _forge() else ()
        return (
            required_prompts,
            *forge,
            steps,
            hires_steps,
            use_old_scheduling,
            opts.CLIP_stop_at_last_layers,
            shared.sd_model.sd_checkpoint_info,
            extra_network_data,
            opts.sdxl_crop_left,
            opts.sdxl_crop_top,
            self.width,
            self.height,
            opts.fp8_storage,
            opts.cache_fp16_weight,
            opts.emphasis,
        )

    def get_conds_with_caching(self, function, required_prompts, steps, caches, extra_network_data, hires_steps=None):
        """``function(shared.sd_model, required_prompts, steps, hires_steps, use_old_scheduling)``,
        or the object stored in the first cache ``[params, result]`` whose params match. A miss
        is stored in ``caches[0]`` -- the very object is returned on later hits (no copy)."""
        if opts.use_old_scheduling:
            old = prompt_parser.get_learned_conditioning_prompt_schedules(required_prompts, steps, hires_steps, False)
            new = prompt_parser.get_learned_conditioning_prompt_schedules(required_prompts, steps, hires_steps, True)
            if old != new:
                self.extra_generation_params["Old prompt editing timelines"] = True
        params = self.cached_params(required_prompts, steps, extra_network_data, hires_steps, opts.use_old_scheduling)
        forge = _forge()
        for cache in caches:
            if cache[0] is not None and params == cache[0]:
                if forge and len(cache) > 2:
                    shared.sd_model.extra_generation_params.update(cache[2])
                return cache[1]
        cache = caches[0]
        with devices.autocast():
            if not forge:
                cache[1] = function(shared.sd_model, required_prompts, steps, hires_steps, opts.use_old_scheduling)
            else:
                import backend.text_processing.classic_engine as classic_engine

                shared.sd_model.set_clip_skip(int(opts.CLIP_stop_at_last_layers))
                cache[1] = function(shared.sd_model, required_prompts, steps, hires_steps, opts.use_old_scheduling)
                last = classic_engine.last_extra_generation_params.copy()
                shared.sd_model.extra_generation_params.update(last)
                if len(cache) > 2:
                    cache[2] = last
                classic_engine.last_extra_generation_params = {}
        cache[0] = params
        return cache[1]

    def setup_conds(self):
        forge = _forge()
        extra = {"distilled_cfg_scale": self.distilled_cfg_scale} if forge else {}
        prompts = prompt_parser.SdConditioning(self.prompts, width=self.width, height=self.height, **extra)
        negative_prompts = prompt_parser.SdConditioning(
            self.negative_prompts, width=self.width, height=self.height, is_negative_prompt=True, **extra
        )
        total_steps = self.steps  # all stand-in samplers take one model call per step
        self.step_multiplier = 1
        self.firstpass_steps = total_steps
        if forge and self.cfg_scale == 1:
            self.uc = None  # Forge: "Skipping unconditional conditioning when CFG = 1."
        else:
            self.uc = self.get_conds_with_caching(
                prompt_parser.get_learned_conditioning,
                negative_prompts,
                total_steps,
                [self.cached_uc],
                self.extra_network_data,
            )
        self.c = self.get_conds_with_caching(
            prompt_parser.get_multicond_learned_conditioning,
            prompts,
            total_steps,
            [self.cached_c],
            self.extra_network_data,
        )

    def get_conds(self):
        return self.c, self.uc

    def parse_extra_network_prompts(self):
        self.prompts, self.extra_network_data = extra_networks.parse_prompts(self.prompts)

    def get_token_merging_ratio(self, for_hr=False):
        return 0


_TXT2IMG_FIELDS = dict(
    _FIELDS,
    enable_hr=False,
    denoising_strength=0.75,
    firstphase_width=0,
    firstphase_height=0,
    hr_scale=2.0,
    hr_upscaler=None,
    hr_second_pass_steps=0,
    hr_resize_x=0,
    hr_resize_y=0,
    hr_checkpoint_name=None,
    hr_sampler_name=None,
    hr_scheduler=None,
    hr_prompt="",
    hr_negative_prompt="",
    force_task_id=None,
)
_FORGE_TXT2IMG_FIELDS = dict(_FORGE_FIELDS, hr_cfg=1.0, hr_distilled_cfg=3.5, hr_additional_modules=None)


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    cached_hr_uc = [None, None]
    cached_hr_c = [None, None]
    _fields = _TXT2IMG_FIELDS
    _forge_fields = _FORGE_TXT2IMG_FIELDS

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hr_checkpoint_info = None
        self.hr_upscale_to_x = 0
        self.hr_upscale_to_y = 0
        self.truncate_x = self.truncate_y = 0
        self.latent_scale_mode = {"mode": "bilinear", "antialias": False}
        self.hr_c = None
        self.hr_uc = None
        self.all_hr_prompts = self.all_hr_negative_prompts = None
        self.hr_prompts = self.hr_negative_prompts = None
        self.hr_extra_network_data = None
        self.firstpass_steps = self.steps
        if self.firstphase_width != 0 or self.firstphase_height != 0:
            self.hr_upscale_to_x, self.hr_upscale_to_y = self.width, self.height
            self.width, self.height = self.firstphase_width, self.firstphase_height
        self.cached_hr_uc = StableDiffusionProcessingTxt2Img.cached_hr_uc
        self.cached_hr_c = StableDiffusionProcessingTxt2Img.cached_hr_c

    def calculate_target_resolution(self):
        if self.hr_resize_x == 0 and self.hr_resize_y == 0:
            self.extra_generation_params["Hires upscale"] = self.hr_scale
            self.hr_upscale_to_x = int(self.width * self.hr_scale)
            self.hr_upscale_to_y = int(self.height * self.hr_scale)
        else:
            self.extra_generation_params["Hires resize"] = f"{self.hr_resize_x}x{self.hr_resize_y}"
            self.hr_upscale_to_x = self.hr_resize_x or self.hr_resize_y * self.width // self.height
            self.hr_upscale_to_y = self.hr_resize_y or self.hr_resize_x * self.height // self.width

    def init(self, all_prompts, all_seeds, all_subseeds):
        if self.enable_hr:
            self.extra_generation_params["Denoising strength"] = self.denoising_strength
            if self.hr_second_pass_steps:
                self.extra_generation_params["Hires steps"] = self.hr_second_pass_steps
            if self.hr_upscaler is not None:
                self.extra_generation_params["Hires upscaler"] = self.hr_upscaler
            if _forge():
                self.extra_generation_params["Hires CFG Scale"] = self.hr_cfg
                if self.sd_model.use_distilled_cfg_scale:
                    self.extra_generation_params["Hires Distilled CFG Scale"] = self.hr_distilled_cfg
            self.calculate_target_resolution()

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        self.sampler = StandinSampler(self)
        x = self.rng.next()
        if _forge():
            self.sd_model.forge_objects = self.sd_model.forge_objects_after_applying_lora.shallow_copy()
            if self.scripts is not None:
                self.scripts.process_before_every_sampling(
                    self, x=x, noise=x, c=conditioning, uc=unconditional_conditioning
                )
            if self.modified_noise is not None:
                x = self.modified_noise
                self.modified_noise = None
        elif self.scripts is not None:
            self.scripts.process_before_every_sampling(
                p=self, x=x, noise=x, c=conditioning, uc=unconditional_conditioning
            )
        samples = self.sampler.sample(self, x, conditioning, unconditional_conditioning)
        del x
        if not self.enable_hr:
            return samples
        return self.sample_hr_pass(samples, None, seeds, subseeds, subseed_strength, prompts)

    def sample_hr_pass(self, samples, decoded_samples, seeds, subseeds, subseed_strength, prompts):
        self.is_hr_pass = True
        self.sampler = StandinSampler(self)
        samples = torch.nn.functional.interpolate(
            samples, size=(self.hr_upscale_to_y // opt_f, self.hr_upscale_to_x // opt_f), mode="bilinear"
        )
        self.rng = _Rng(samples.shape[1:], self.seeds)
        noise = self.rng.next()
        if not self.disable_extra_networks:
            with devices.autocast():
                extra_networks.activate(self, self.hr_extra_network_data)
        with devices.autocast():
            self.calculate_hr_conds()
        if self.scripts is not None:
            self.scripts.before_hr(self)
            self.scripts.process_before_every_sampling(p=self, x=samples, noise=noise, c=self.hr_c, uc=self.hr_uc)
        if _forge():
            # Forge resets forge_objects (dropping what the first call patched in) and calls the hook again
            self.sd_model.forge_objects = self.sd_model.forge_objects_after_applying_lora.shallow_copy()
            if self.scripts is not None:
                self.scripts.process_before_every_sampling(self, x=samples, noise=noise, c=self.hr_c, uc=self.hr_uc)
            if self.modified_noise is not None:
                noise = self.modified_noise
                self.modified_noise = None
        samples = self.sampler.sample_img2img(
            self, samples, noise, self.hr_c, self.hr_uc, steps=self.hr_second_pass_steps or self.steps
        )
        self.sampler = None
        self.is_hr_pass = False
        return samples

    def close(self):
        super().close()
        self.hr_c = None
        self.hr_uc = None
        if not opts.persistent_cond_cache:
            StableDiffusionProcessingTxt2Img.cached_hr_uc = [None, None]
            StableDiffusionProcessingTxt2Img.cached_hr_c = [None, None]

    def setup_prompts(self):
        super().setup_prompts()
        if not self.enable_hr:
            return
        if self.hr_prompt == "":
            self.hr_prompt = self.prompt
        if self.hr_negative_prompt == "":
            self.hr_negative_prompt = self.negative_prompt
        n = self.batch_size * self.n_iter
        self.all_hr_prompts = self.hr_prompt if isinstance(self.hr_prompt, list) else n * [self.hr_prompt]
        self.all_hr_negative_prompts = (
            self.hr_negative_prompt if isinstance(self.hr_negative_prompt, list) else n * [self.hr_negative_prompt]
        )

    def calculate_hr_conds(self):
        """Hires conds: schedules relative to the hires steps (``hires_steps`` given); the
        first-pass caches are consulted too (``[cached_hr_c, cached_c]``)."""
        if self.hr_c is not None:
            return
        forge = _forge()
        extra = {"distilled_cfg_scale": self.hr_distilled_cfg} if forge else {}
        hr_prompts = prompt_parser.SdConditioning(
            self.hr_prompts, width=self.hr_upscale_to_x, height=self.hr_upscale_to_y, **extra
        )
        hr_negative_prompts = prompt_parser.SdConditioning(
            self.hr_negative_prompts,
            width=self.hr_upscale_to_x,
            height=self.hr_upscale_to_y,
            is_negative_prompt=True,
            **extra,
        )
        total_steps = self.hr_second_pass_steps or self.steps
        if forge and self.hr_cfg == 1:
            self.hr_uc = None  # Forge: "Skipping unconditional conditioning (HR pass) when CFG = 1."
        else:
            self.hr_uc = self.get_conds_with_caching(
                prompt_parser.get_learned_conditioning,
                hr_negative_prompts,
                self.firstpass_steps,
                [self.cached_hr_uc, self.cached_uc],
                self.hr_extra_network_data,
                total_steps,
            )
        self.hr_c = self.get_conds_with_caching(
            prompt_parser.get_multicond_learned_conditioning,
            hr_prompts,
            self.firstpass_steps,
            [self.cached_hr_c, self.cached_c],
            self.hr_extra_network_data,
            total_steps,
        )

    def setup_conds(self):
        if self.is_hr_pass:
            # called by the refiner switch during the hires pass
            self.hr_c = None
            self.calculate_hr_conds()
            return
        super().setup_conds()
        self.hr_uc = None
        self.hr_c = None
        if not _forge():
            if self.enable_hr and self.hr_checkpoint_info is None and opts.hires_fix_use_firstpass_conds:
                self.calculate_hr_conds()
            return
        # Forge computes the hires conds here, with the hires pass's extra networks
        if self.enable_hr and self.hr_checkpoint_info is None:
            if opts.hires_fix_use_firstpass_conds:
                self.calculate_hr_conds()
            else:
                with devices.autocast():
                    extra_networks.activate(self, self.hr_extra_network_data)
                self.calculate_hr_conds()
                with devices.autocast():
                    extra_networks.activate(self, self.extra_network_data)

    def get_conds(self):
        if self.is_hr_pass:
            return self.hr_c, self.hr_uc
        return super().get_conds()

    def parse_extra_network_prompts(self):
        res = super().parse_extra_network_prompts()
        if self.enable_hr:
            lo, hi = self.iteration * self.batch_size, (self.iteration + 1) * self.batch_size
            self.hr_prompts = self.all_hr_prompts[lo:hi]
            self.hr_negative_prompts = self.all_hr_negative_prompts[lo:hi]
            self.hr_prompts, self.hr_extra_network_data = extra_networks.parse_prompts(self.hr_prompts)
        return res


class Processed:
    def __init__(
        self,
        p,
        images_list,
        seed=-1,
        info="",
        all_prompts=None,
        all_negative_prompts=None,
        all_seeds=None,
        infotexts=None,
        comments="",
    ):
        self.images = images_list
        self.prompt = p.prompt
        self.negative_prompt = p.negative_prompt
        self.seed = seed
        self.info = info
        self.comments = comments
        self.width, self.height = p.width, p.height
        self.extra_generation_params = p.extra_generation_params
        self.all_prompts = all_prompts or p.all_prompts or []
        self.all_negative_prompts = all_negative_prompts or p.all_negative_prompts or []
        self.all_seeds = all_seeds or p.all_seeds or []
        self.infotexts = infotexts or [info]
        self.sampling_records = list(p.sampling_records)


def create_infotext(
    p, all_prompts, all_seeds, all_subseeds, comments=None, iteration=0, position_in_batch=0, index=None
):
    """``prompt\\nNegative prompt: ...\\nSteps: .., Seed: .., <extra_generation_params>``. As in the WebUI, a
    list value is read at the image's index and a callable is called with this function's locals."""
    if index is None:
        index = position_in_batch + iteration * p.batch_size
    params = {
        "Steps": p.steps,
        "CFG scale": p.cfg_scale,
        "Seed": all_seeds[index],
        "Size": f"{p.width}x{p.height}",
        "Model": p.sd_model.sd_checkpoint_info.name,
    }
    if _forge() and getattr(p, "firstpass_use_distilled_cfg_scale", p.sd_model.use_distilled_cfg_scale):
        params["Distilled CFG Scale"] = p.distilled_cfg_scale
    params.update(p.extra_generation_params)
    rendered = {}
    arguments = dict(locals())
    for key, value in params.items():
        if isinstance(value, list):
            value = value[index]
        elif callable(value):
            value = value(**arguments)
        if value is not None:
            rendered[key] = value
    text = ", ".join(k if k == v else f"{k}: {v}" for k, v in rendered.items())
    negative = f"\nNegative prompt: {p.all_negative_prompts[index]}" if p.all_negative_prompts[index] else ""
    return f"{all_prompts[index]}{negative}\n{text}".strip()


def process_images(p: StableDiffusionProcessing) -> Processed:
    if p.scripts is not None:
        p.scripts.before_process(p)
    stored = {k: opts.data[k] for k in p.override_settings if k in opts.data}
    try:
        for k, v in p.override_settings.items():
            opts.set(k, v, is_api=True, run_callbacks=False)
        res = process_images_inner(p)
    finally:
        if p.override_settings_restore_afterwards:
            for k, v in stored.items():
                setattr(opts, k, v)
    return res


def process_images_inner(p: StableDiffusionProcessing) -> Processed:
    if _forge():
        return _process_images_inner_forge(p)
    seed = p.seed if p.seed not in (-1, None, "") else 1234
    p.tiling = opts.tiling if p.tiling is None else p.tiling
    if p.refiner_checkpoint not in (None, "", "None", "none"):
        p.refiner_checkpoint_info = p.refiner_checkpoint  # the stand-in passes the model object
    p.sd_model_name = shared.sd_model.sd_checkpoint_info.name_for_extra
    p.sd_model_hash = shared.sd_model.sd_model_hash
    model_hijack.hijack(shared.sd_model)
    model_hijack.clear_comments()
    p.setup_prompts()
    p.all_seeds = (
        seed
        if isinstance(seed, list)
        else [int(seed) + (x if p.subseed_strength == 0 else 0) for x in range(len(p.all_prompts))]
    )
    p.all_subseeds = [int(p.subseed if p.subseed != -1 else 0) + x for x in range(len(p.all_prompts))]

    if not p.do_not_reload_embeddings:
        model_hijack.embedding_db.load_textual_inversion_embeddings()

    if p.scripts is not None:
        p.scripts.process(p)

    infotexts = []
    output_images = []
    main_model = shared.sd_model
    with torch.no_grad(), p.sd_model.ema_scope():
        with devices.autocast():
            p.init(p.all_prompts, p.all_seeds, p.all_subseeds)

        for n in range(p.n_iter):
            p.iteration = n
            shared.sd_model = main_model  # reload_model_weights(): back from a refiner
            lo, hi = n * p.batch_size, (n + 1) * p.batch_size
            p.prompts = p.all_prompts[lo:hi]
            p.negative_prompts = p.all_negative_prompts[lo:hi]
            p.seeds = p.all_seeds[lo:hi]
            p.subseeds = p.all_subseeds[lo:hi]
            p.rng = _Rng((opt_C, p.height // opt_f, p.width // opt_f), p.seeds)

            if p.scripts is not None:
                p.scripts.before_process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
            if len(p.prompts) == 0:
                break

            p.parse_extra_network_prompts()
            if not p.disable_extra_networks:
                with devices.autocast():
                    extra_networks.activate(p, p.extra_network_data)

            if p.scripts is not None:
                p.scripts.process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)

            p.setup_conds()
            p.extra_generation_params.update(model_hijack.extra_generation_params)
            for comment in model_hijack.comments:
                p.comment(comment)

            samples = p.sample(
                conditioning=p.c,
                unconditional_conditioning=p.uc,
                seeds=p.seeds,
                subseeds=p.subseeds,
                subseed_strength=p.subseed_strength,
                prompts=p.prompts,
            )

            if p.scripts is not None:
                ps = scripts.PostSampleArgs(samples)
                p.scripts.post_sample(p, ps)
                samples = ps.samples

            x_samples = torch.clamp((samples[:, :3] + 1.0) / 2.0, 0.0, 1.0)
            if p.scripts is not None:
                p.scripts.postprocess_batch(p, x_samples, batch_number=n)
                batch_params = scripts.PostprocessBatchListArgs(list(x_samples))
                p.scripts.postprocess_batch_list(p, batch_params, batch_number=n)
                x_samples = batch_params.images

            for i, image in enumerate(x_samples):
                if p.scripts is not None:
                    pp = scripts.PostprocessImageArgs(image)
                    p.scripts.postprocess_image(p, pp)
                    image = pp.image
                infotexts.append(
                    create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, iteration=n, position_in_batch=i)
                )
                output_images.append(image)

    if not p.disable_extra_networks and p.extra_network_data:
        extra_networks.deactivate(p, p.extra_network_data)

    shared.sd_model = main_model
    res = Processed(
        p,
        output_images,
        p.all_seeds[0],
        infotexts[0] if infotexts else "",
        infotexts=infotexts,
        comments="\n".join(p.comments),
    )
    if p.scripts is not None:
        p.scripts.postprocess(p, res)
    return res


def _process_images_inner_forge(p: StableDiffusionProcessing) -> Processed:
    """Forge's ``process_images_inner``: no hijack / embedding reload (each engine read its folder when
    built), model-level ``comments`` / ``extra_generation_params``, ``torch.inference_mode()``, and
    ``forge_objects`` reset per batch (original -> extra networks -> after-LoRA copy)."""
    seed = p.seed if p.seed not in (-1, None, "") else 1234
    p.tiling = opts.tiling if p.tiling is None else p.tiling
    if p.refiner_checkpoint not in (None, "", "None", "none"):
        p.refiner_checkpoint_info = p.refiner_checkpoint  # the stand-in passes the model object
    sd_model = shared.sd_model
    p.sd_model_name = sd_model.sd_checkpoint_info.name_for_extra
    p.sd_model_hash = sd_model.sd_model_hash
    sd_model.comments = []
    sd_model.extra_generation_params = {}
    p.setup_prompts()
    p.all_seeds = (
        seed
        if isinstance(seed, list)
        else [int(seed) + (x if p.subseed_strength == 0 else 0) for x in range(len(p.all_prompts))]
    )
    p.all_subseeds = [int(p.subseed if p.subseed != -1 else 0) + x for x in range(len(p.all_prompts))]

    if p.scripts is not None:
        p.scripts.process(p)

    infotexts = []
    output_images = []
    main_model = shared.sd_model
    with torch.inference_mode():
        with devices.autocast():
            p.init(p.all_prompts, p.all_seeds, p.all_subseeds)

        for n in range(p.n_iter):
            p.iteration = n
            shared.sd_model = main_model  # sd_models.forge_model_reload(): back from a refiner
            p.sd_model.forge_objects = p.sd_model.forge_objects_original.shallow_copy()
            lo, hi = n * p.batch_size, (n + 1) * p.batch_size
            p.prompts = p.all_prompts[lo:hi]
            p.negative_prompts = p.all_negative_prompts[lo:hi]
            p.seeds = p.all_seeds[lo:hi]
            p.subseeds = p.all_subseeds[lo:hi]
            latent_channels = shared.sd_model.forge_objects.vae.latent_channels
            p.rng = _Rng((latent_channels, p.height // opt_f, p.width // opt_f), p.seeds)

            if p.scripts is not None:
                p.scripts.before_process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
            if len(p.prompts) == 0:
                break

            p.parse_extra_network_prompts()
            if not p.disable_extra_networks:
                extra_networks.activate(p, p.extra_network_data)
            p.sd_model.forge_objects = p.sd_model.forge_objects_after_applying_lora.shallow_copy()

            if p.scripts is not None:
                p.scripts.process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)

            p.setup_conds()
            p.extra_generation_params.update(p.sd_model.extra_generation_params)
            for comment in p.sd_model.comments:
                p.comment(comment)

            samples = p.sample(
                conditioning=p.c,
                unconditional_conditioning=p.uc,
                seeds=p.seeds,
                subseeds=p.subseeds,
                subseed_strength=p.subseed_strength,
                prompts=p.prompts,
            )

            if p.scripts is not None:
                ps = scripts.PostSampleArgs(samples)
                p.scripts.post_sample(p, ps)
                samples = ps.samples

            x_samples = torch.clamp((samples[:, :3] + 1.0) / 2.0, 0.0, 1.0)
            if p.scripts is not None:
                p.scripts.postprocess_batch(p, x_samples, batch_number=n)
                batch_params = scripts.PostprocessBatchListArgs(list(x_samples))
                p.scripts.postprocess_batch_list(p, batch_params, batch_number=n)
                x_samples = batch_params.images

            for i, image in enumerate(x_samples):
                if p.scripts is not None:
                    pp = scripts.PostprocessImageArgs(image)
                    p.scripts.postprocess_image(p, pp)
                    image = pp.image
                infotexts.append(
                    create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, iteration=n, position_in_batch=i)
                )
                output_images.append(image)

    if not p.disable_extra_networks and p.extra_network_data:
        extra_networks.deactivate(p, p.extra_network_data)

    shared.sd_model = main_model
    res = Processed(
        p,
        output_images,
        p.all_seeds[0],
        infotexts[0] if infotexts else "",
        infotexts=infotexts,
        comments="\n".join(p.comments),
    )
    if p.scripts is not None:
        p.scripts.postprocess(p, res)
    return res


__all__ = [
    "Processed",
    "SamplingRecord",
    "StableDiffusionProcessing",
    "StableDiffusionProcessingTxt2Img",
    "errors",
    "process_images",
    "sampling_records",
]
