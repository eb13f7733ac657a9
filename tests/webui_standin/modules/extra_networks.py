"""Stand-in for ``modules/extra_networks.py``: ``<name:args>`` tags are cut out of prompts;
nothing is activated except the ``after_extra_networks_activate`` script hook."""

from __future__ import annotations

import re
from collections import defaultdict


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
    pass
