"""Stand-in for ``modules/extra_networks.py``: ``<name:args>`` tags are cut out of prompts and the
registered extra networks (``extra_network_registry``; ``standin.reset`` registers the built-in
``lora``) are activated: the mentioned ones with their arguments, every other one with ``[]``;
unknown names are skipped. Then the ``after_extra_networks_activate`` script hook."""

from __future__ import annotations

import re
from collections import defaultdict

from modules import errors

extra_network_registry = {}
extra_network_aliases = {}


def initialize():
    extra_network_registry.clear()
    extra_network_aliases.clear()


def register_extra_network(extra_network):
    extra_network_registry[extra_network.name] = extra_network


def register_extra_network_alias(extra_network, alias):
    extra_network_aliases[alias] = extra_network


class ExtraNetworkParams:
    def __init__(self, items=None):
        self.items = items or []
        self.positional = []
        self.named = {}
        for item in self.items:
            parts = item.split("=", 2) if isinstance(item, str) else [item]
            if len(parts) == 2:
                self.named[parts[0]] = parts[1]
            else:
                self.positional.append(item)

    def __eq__(self, other):
        return self.items == other.items


class ExtraNetwork:
    def __init__(self, name):
        self.name = name

    def activate(self, p, params_list):
        raise NotImplementedError

    def deactivate(self, p):
        raise NotImplementedError


def lookup_extra_networks(extra_network_data):
    """``{ExtraNetwork: [ExtraNetworkParams, ...]}`` for the registered (or aliased) names."""
    res = {}
    for name, args in list(extra_network_data.items()):
        extra_network = extra_network_registry.get(name)
        if extra_network is None:
            extra_network = extra_network_aliases.get(name)
        if extra_network is None:
            continue
        res.setdefault(extra_network, []).extend(args)
    return res


re_extra_net = re.compile(r"<(\w+):([^>]+)>")


def parse_prompt(prompt):
    found = defaultdict(list)

    def cut(m):
        found[m.group(1)].append(ExtraNetworkParams(items=m.group(2).split(":")))
        return ""

    return re.sub(re_extra_net, cut, prompt), found


def parse_prompts(prompts):
    """``(prompts without tags, data of the first prompt)``, as the WebUI does."""
    cleaned = []
    data = None
    for prompt in prompts:
        text, parsed = parse_prompt(prompt)
        if data is None:
            data = parsed
        cleaned.append(text)
    return cleaned, data


activations: list = []
"""(p.iteration, p.is_hr_pass, extra_network_data) for every activate call (for tests)."""


def activate(p, extra_network_data):
    activations.append((p.iteration, getattr(p, "is_hr_pass", False), extra_network_data))
    activated = []
    for extra_network, args in lookup_extra_networks(extra_network_data).items():
        try:
            extra_network.activate(p, args)
            activated.append(extra_network)
        except Exception as e:
            errors.display(e, f"activating extra network {extra_network.name} with arguments {args}")
    for name, extra_network in extra_network_registry.items():
        if extra_network in activated:
            continue
        try:
            extra_network.activate(p, [])
        except Exception as e:
            errors.display(e, f"activating extra network {name}")
    if p.scripts is not None:
        p.scripts.after_extra_networks_activate(
            p,
            batch_number=p.iteration,
            prompts=p.prompts,
            seeds=p.seeds,
            subseeds=p.subseeds,
            extra_network_data=extra_network_data,
        )


def deactivate(p, extra_network_data):
    data = lookup_extra_networks(extra_network_data)
    for extra_network in data:
        try:
            extra_network.deactivate(p)
        except Exception as e:
            errors.display(e, f"deactivating extra network {extra_network.name}")
    for name, extra_network in extra_network_registry.items():
        if extra_network in data:
            continue
        try:
            extra_network.deactivate(p)
        except Exception as e:
            errors.display(e, f"deactivating unmentioned extra network {name}")
