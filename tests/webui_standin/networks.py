"""Stand-in for the WebUI's built-in Lora extension (``extensions-builtin/Lora``: ``networks.py``,
``network.py``, ``lora_patches.py``), text encoders only (the stand-in has no UNet).

How the WebUI 1.10 applies a LoRA, and so how this does: ``<lora:name:te>`` makes
``ExtraNetworkLora.activate`` call ``load_networks`` (``loaded_networks`` is replaced: an empty
prompt list empties it). Nothing changes right then: ``torch.nn.Linear.forward`` and
``torch.nn.MultiheadAttention.forward`` are patched globally (``originals``), and each forward of a
layer that has a ``network_layer_name`` first compares the wanted networks with the ones merged into
that layer (``network_current_names``); when they differ it restores the weights from its backup
(``network_weights_backup``, taken at the first merge) and adds every loaded network's
``calc_updown`` (``updown * te_multiplier``). So while a LoRA is loaded, any forward through those
layers (the WebUI's or an extension's) sees the merged weights; after a generation without it, each
layer gets its own weights back at its next forward. ``deactivate`` restores nothing.

Networks here are synthetic: ``register_network(name, seed, rank, scale)`` (``standin.add_lora``)
makes a LoRA over every Linear of the text encoders and every ``MultiheadAttention`` (its q/k/v rows
of ``in_proj_weight`` and ``out_proj``); layer ``k``'s delta is ``scale * up @ down`` with ``up``
``(out, rank)`` and ``down`` ``(rank, in)`` drawn from N(0, 1) with a generator seeded from ``seed``
and the layer's name (``NetworkModule.up_down``).

Forge mode (a Forge engine loaded): ``load_networks`` is Forge's (``forge_standin.load_networks``): the
clip patcher gets the patches and ``backend.memory_management.load_model_gpu`` merges them."""

from __future__ import annotations

import hashlib
import re
import zlib

import torch
from modules import devices, sd_hijack, shared


class NetworkOnDisk:
    def __init__(self, name, seed=0, rank=4, scale=0.1):
        self.name = name
        self.alias = name
        self.filename = f"<standin-lora>/{name}.safetensors"
        self.seed = seed
        self.rank = rank
        self.scale = scale
        self.metadata = {}
        self.is_safetensors = True
        self.hash = hashlib.sha256(f"{name}:{seed}:{rank}:{scale}".encode()).hexdigest()
        self.shorthash = self.hash[0:12]
        self.sd_version = "Unknown"

    def get_alias(self):
        return self.alias

    def read_hash(self):
        pass


class Network:  # a LoraModule
    def __init__(self, name, network_on_disk):
        self.name = name
        self.network_on_disk = network_on_disk
        self.te_multiplier = 1.0
        self.unet_multiplier = 1.0
        self.dyn_dim = None
        self.modules = {}  # compvis layer name (+ "_q_proj" ... for MultiheadAttention) -> NetworkModule
        self.bundle_embeddings = {}
        self.mtime = None
        self.mentioned_name = None


class NetworkModule:
    """One layer's LoRA: ``calc_updown(weight)`` -> ``(scale * up @ down * multiplier, None)``."""

    def __init__(self, net: Network, sd_key: str, sd_module):
        self.network = net
        self.sd_key = sd_key
        self.sd_module = sd_module

    def multiplier(self):
        return self.network.te_multiplier if "transformer" in self.sd_key[:20] else self.network.unet_multiplier

    def up_down(self, shape):
        disk = self.network.network_on_disk
        generator = torch.Generator().manual_seed(zlib.crc32(f"{disk.seed}:{self.sd_key}".encode()))
        up = torch.randn(shape[0], disk.rank, generator=generator)
        down = torch.randn(disk.rank, shape[1], generator=generator)
        return up, down

    def calc_updown(self, orig_weight):
        up, down = self.up_down(orig_weight.shape)
        updown = (up @ down).to(orig_weight.device, dtype=orig_weight.dtype) * self.network.network_on_disk.scale
        return updown * self.multiplier(), None


available_networks: dict[str, NetworkOnDisk] = {}
available_network_aliases: dict[str, NetworkOnDisk] = {}
forbidden_network_aliases: dict[str, int] = {}
loaded_networks: list[Network] = []
networks_in_memory: dict[str, Network] = {}
re_x_proj = re.compile(r"(.*)_([qkv]_proj)$")


def register_network(name, seed=0, rank=4, scale=0.1) -> NetworkOnDisk:
    """Put a synthetic LoRA "file" into the Lora folder."""
    on_disk = NetworkOnDisk(name, seed, rank, scale)
    available_networks[name] = on_disk
    available_network_aliases[name] = on_disk
    return on_disk


def clear():
    """Forget every network (``standin.reset``); layers restore their weights at their next forward."""
    available_networks.clear()
    available_network_aliases.clear()
    loaded_networks.clear()
    networks_in_memory.clear()


def _named_modules(wrapped):
    """``wrapped.named_modules()`` with the names transformers 4.x gives (what the WebUI sees): 5.x dropped
    the ``text_model`` level of ``CLIPTextModel``, so ``transformer.X`` is named ``transformer.text_model.X``."""
    transformer = getattr(wrapped, "transformer", None)
    flat = transformer is not None and not hasattr(transformer, "text_model") and hasattr(transformer, "embeddings")
    for name, module in wrapped.named_modules():
        if flat and name.startswith("transformer."):
            name = "transformer.text_model." + name[len("transformer.") :]
        yield name, module


def assign_network_names_to_compvis_modules(sd_model):
    """``network_layer_name`` on every text-encoder module, as the WebUI names them: SDXL
    ``f"{i}_{name}"`` over each ``conditioner.embedders[i].wrapped``, else over
    ``cond_stage_model.wrapped`` (dots -> underscores). The stand-in has no ``model.diffusion_model``."""
    mapping = {}
    if getattr(sd_model, "is_sdxl", False):
        for i, embedder in enumerate(sd_model.conditioner.embedders):
            if not hasattr(embedder, "wrapped"):
                continue
            for name, module in _named_modules(embedder.wrapped):
                network_name = f"{i}_{name.replace('.', '_')}"
                mapping[network_name] = module
                module.network_layer_name = network_name
    else:
        cond_stage_model = getattr(sd_model.cond_stage_model, "wrapped", sd_model.cond_stage_model)
        for name, module in _named_modules(cond_stage_model):
            network_name = name.replace(".", "_")
            mapping[network_name] = module
            module.network_layer_name = network_name
    sd_model.network_layer_mapping = mapping


def load_network(name, network_on_disk) -> Network:
    """A LoRA over every Linear and MultiheadAttention of the loaded model's text encoders."""
    net = Network(name, network_on_disk)
    net.mtime = 0.0
    sd_model = shared.sd_model
    if not hasattr(sd_model, "network_layer_mapping"):
        assign_network_names_to_compvis_modules(sd_model)
    for key, module in sd_model.network_layer_mapping.items():
        if isinstance(module, torch.nn.MultiheadAttention):
            for part in ("q_proj", "k_proj", "v_proj"):
                net.modules[f"{key}_{part}"] = NetworkModule(net, f"{key}_{part}", module)
        elif isinstance(module, torch.nn.Linear):
            net.modules[key] = NetworkModule(net, key, module)
    return net


def load_networks(names, te_multipliers=None, unet_multipliers=None, dyn_dims=None):
    if _forge_loaded():
        import forge_standin

        return forge_standin.load_networks(names, te_multipliers, unet_multipliers, dyn_dims)
    already_loaded = {net.name: net for net in loaded_networks if net.name in names}
    loaded_networks.clear()
    failed = []
    for i, name in enumerate(names):
        network_on_disk = available_network_aliases.get(name)
        net = already_loaded.get(name)
        if network_on_disk is not None:
            if net is None:
                net = networks_in_memory.get(name)
            if net is None:
                net = load_network(name, network_on_disk)
                networks_in_memory[name] = net
            net.mentioned_name = name
            network_on_disk.read_hash()
        if net is None:
            failed.append(name)
            continue
        net.te_multiplier = te_multipliers[i] if te_multipliers else 1.0
        net.unet_multiplier = unet_multipliers[i] if unet_multipliers else 1.0
        net.dyn_dim = dyn_dims[i] if dyn_dims else 1.0
        loaded_networks.append(net)
    if failed:
        sd_hijack.model_hijack.comments.append(f"Lora not found: {', '.join(failed)}")
    # lora_in_memory_limit is 0 by default: nothing stays cached beyond the loaded ones
    while len(networks_in_memory) > shared.opts.lora_in_memory_limit and networks_in_memory:
        networks_in_memory.pop(next(iter(networks_in_memory)))


def _forge_loaded() -> bool:
    """Forge mode (a Forge engine is loaded): ``load_networks`` is Forge's (``forge_standin``)."""
    return hasattr(shared.sd_model, "forge_objects_original")


def _backup(weight):
    return None if weight is None else weight.to(devices.cpu, copy=True)


def _restore(obj, field, weight):
    if weight is None:
        setattr(obj, field, None)
    else:
        getattr(obj, field).copy_(weight)


def network_restore_weights_from_backup(self):
    weights_backup = getattr(self, "network_weights_backup", None)
    bias_backup = getattr(self, "network_bias_backup", None)
    if weights_backup is None and bias_backup is None:
        return
    with torch.no_grad():
        if weights_backup is not None:
            if isinstance(self, torch.nn.MultiheadAttention):
                _restore(self, "in_proj_weight", weights_backup[0])
                _restore(self.out_proj, "weight", weights_backup[1])
            else:
                _restore(self, "weight", weights_backup)
        if isinstance(self, torch.nn.MultiheadAttention):
            _restore(self.out_proj, "bias", bias_backup)
        else:
            _restore(self, "bias", bias_backup)


def network_apply_weights(self):
    """Merge the loaded networks into this layer's weights unless they already are."""
    network_layer_name = getattr(self, "network_layer_name", None)
    if network_layer_name is None:
        return
    current_names = getattr(self, "network_current_names", ())
    wanted_names = tuple((x.name, x.te_multiplier, x.unet_multiplier, x.dyn_dim) for x in loaded_networks)

    if getattr(self, "network_weights_backup", None) is None and wanted_names != ():
        if current_names != ():
            raise RuntimeError(f"{network_layer_name} - no backup weights found and current weights are not unchanged")
        if isinstance(self, torch.nn.MultiheadAttention):
            self.network_weights_backup = (_backup(self.in_proj_weight), _backup(self.out_proj.weight))
        else:
            self.network_weights_backup = _backup(self.weight)
    if getattr(self, "network_bias_backup", None) is None and wanted_names != ():
        if isinstance(self, torch.nn.MultiheadAttention):
            self.network_bias_backup = _backup(self.out_proj.bias)
        else:
            self.network_bias_backup = _backup(getattr(self, "bias", None))

    if current_names == wanted_names:
        return
    network_restore_weights_from_backup(self)
    with torch.no_grad():
        for net in loaded_networks:
            module = net.modules.get(network_layer_name)
            if module is not None and hasattr(self, "weight"):
                updown, _ = module.calc_updown(self.weight)
                self.weight.copy_(self.weight + updown)
                continue
            parts = [net.modules.get(f"{network_layer_name}_{p}") for p in ("q_proj", "k_proj", "v_proj")]
            if isinstance(self, torch.nn.MultiheadAttention) and all(parts):
                chunks = self.in_proj_weight.chunk(3, 0)
                self.in_proj_weight += torch.vstack([m.calc_updown(w)[0] for m, w in zip(parts, chunks)])
                out = net.modules.get(f"{network_layer_name}_out_proj")
                if out is not None:
                    self.out_proj.weight += out.calc_updown(self.out_proj.weight)[0]
    self.network_current_names = wanted_names


class LoraPatches:
    """``torch.nn.Linear.forward`` and ``torch.nn.MultiheadAttention.forward`` patched for the whole
    process (the WebUI also patches Conv2d, GroupNorm and LayerNorm, which no stand-in LoRA touches)."""

    def __init__(self):
        self.Linear_forward = torch.nn.Linear.forward
        self.MultiheadAttention_forward = torch.nn.MultiheadAttention.forward
        torch.nn.Linear.forward = network_Linear_forward
        torch.nn.MultiheadAttention.forward = network_MultiheadAttention_forward

    def undo(self):
        torch.nn.Linear.forward = self.Linear_forward
        torch.nn.MultiheadAttention.forward = self.MultiheadAttention_forward


def network_Linear_forward(self, input):
    network_apply_weights(self)
    return originals.Linear_forward(self, input)


def network_MultiheadAttention_forward(self, *args, **kwargs):
    network_apply_weights(self)
    return originals.MultiheadAttention_forward(self, *args, **kwargs)


originals: LoraPatches | None = None


def install_patches():
    """What the Lora extension's script does when it is loaded (once per process)."""
    global originals
    if originals is None:
        originals = LoraPatches()
