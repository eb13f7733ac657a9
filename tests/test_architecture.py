"""The layers stay as drawn (README "Architecture"): imports run one way, from the front ends and the host
adapters down to `flowcore.errors`; no import circle; no module takes another's private name.

Read from the source with `ast`, every import counts, those inside functions too (they are how a module defers
a heavy import, not how it escapes the layering).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# flowcore's layers, lowest first; a module may import its own layer and those below it. `models` and `hosts`
# share a rank but not each other: the host adapters get their models from the host.
LAYERS = {
    "errors": 0,
    "prompts": 1,
    "encoders": 2,
    "detection": 3,
    "patching": 4,
    "models": 5,
    "hosts": 5,
    "studies": 6,
    "frontends": 7,
    "testing": 8,
}
TOP = 9  # the package itself, `__main__`, and the old module paths kept importable
ADAPTERS = ("follow_the_flow_webui", "comfyui_nodes", "scripts")
NOT_FOR_ADAPTERS = ("studies", "frontends", "testing")  # what a host adapter never needs
OUR_PACKAGES = ("flowcore", *ADAPTERS)


def module_files() -> dict[str, Path]:
    """Every module of flowcore and of the host adapters, by dotted name."""
    found = {}
    for package in OUR_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = module_files()


def moved_to(path: Path) -> str | None:
    """The new module of an old path kept importable (a file that puts that module in its own place), else None."""
    source = path.read_text()
    if "sys.modules[__name__] =" not in source:
        return None
    node = next(node for node in ast.parse(source).body if isinstance(node, ast.ImportFrom))
    return f"{node.module}.{node.names[0].name}"


MOVED = {name: moved_to(path) for name, path in MODULES.items() if name.count(".") == 1 and moved_to(path)}


def imports(name: str, source: str | None = None) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import in module `name` (or in `source`, read as that
    module) that reaches our packages."""
    path = MODULES.get(name, Path(name))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            names = [alias.name for alias in node.names]
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]
            found += [(module, []) for module in submodules]
            taken = [n for n in names if f"{base}.{n}" not in MODULES]
            if taken or not submodules:
                found.append((base, taken))
    return [(module, names) for module, names in found if module.split(".")[0] in OUR_PACKAGES]


def layer(name: str) -> tuple[str, int]:
    """The layer of a flowcore module: its subpackage, or the top-level module's own name."""
    parts = name.split(".")
    if len(parts) == 1 or parts[1] == "__main__" or name in MOVED:
        return "top", TOP
    return parts[1], LAYERS[parts[1]]


FLOWCORE = sorted(name for name in MODULES if name.split(".")[0] == "flowcore")


def test_every_flowcore_module_has_a_layer():
    assert all(layer(name) for name in FLOWCORE)
    assert {name.split(".")[1] for name in FLOWCORE if name.count(".") >= 2} <= set(LAYERS)


def layer_violations(name: str, found: list[tuple[str, list[str]]]) -> list[str]:
    """What in `found` (the imports of flowcore module `name`) breaks the layering."""
    own, rank = layer(name)
    wrong = []
    for target, _ in found:
        if target.split(".")[0] != "flowcore":
            wrong.append(f"{name} imports the host adapter {target}")
        elif name in MOVED:
            if target != MOVED[name]:
                wrong.append(f"the old path {name} may only alias {MOVED[name]}, not import {target}")
        elif target in MOVED:
            wrong.append(f"{name} imports the old path {target}; import {MOVED[target]}")
        else:
            their, their_rank = layer(target)
            if their_rank > rank or (their_rank == rank and their != own):
                wrong.append(f"{name} ({own}, layer {rank}) imports {target} ({their}, layer {their_rank})")
    return wrong


@pytest.mark.parametrize("name", FLOWCORE)
def test_flowcore_imports_run_down_the_layers(name):
    assert not layer_violations(name, imports(name))


@pytest.mark.parametrize("name", sorted(name for name in MODULES if name.split(".")[0] in ADAPTERS))
def test_host_adapters_import_flowcore_and_their_own_host_only(name):
    own = name.split(".")[0]
    for target, _ in imports(name):
        top = target.split(".")[0]
        if top == "flowcore":
            assert target not in MOVED, f"{name} imports the old path {target}; import {MOVED[target]}"
            assert layer(target)[0] not in NOT_FOR_ADAPTERS, f"{name} imports {target}"
        elif own == "scripts":  # the WebUI's entry script loads the WebUI glue
            assert top == "follow_the_flow_webui", f"{name} imports {target}"
        else:
            assert top == own, f"{name} imports another host's adapter, {target}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_takes_another_modules_private_name(name):
    for target, names in imports(name):
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{name} takes {private} from {target}"


def test_no_import_circle_in_flowcore():
    graph = {name: {t for t, _ in imports(name) if t in MODULES and t != name} for name in FLOWCORE}
    graph["flowcore"] = set()  # its names load lazily (PEP 562); importing them from inside is caught above
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            pytest.fail("import circle: " + " -> ".join([*path[path.index(name) :], name]))
        if name in done:
            return
        for target in sorted(graph.get(name, ())):
            visit(target, [*path, name])
        done.add(name)

    for name in FLOWCORE:
        visit(name, [])


def test_the_checks_see_a_violation():
    """The walk reads the imports it judges: an upward, a sideways and an old-path import are each reported,
    a deferred one (inside a function) too."""
    upward = "def f():\n    from flowcore.patching.patcher import FlowPatcher\n"
    assert layer_violations("flowcore.prompts.markers", imports("flowcore.prompts.markers", upward))
    sideways = "from flowcore.hosts import anything\n"
    assert layer_violations("flowcore.models.pipelines", imports("flowcore.models.pipelines", sideways))
    old_path = "from flowcore.layout import PromptLayout\n"
    assert layer_violations("flowcore.patching.report", imports("flowcore.patching.report", old_path))
    downward = "from flowcore.prompts.items import LexicalItem\n"
    assert not layer_violations("flowcore.patching.report", imports("flowcore.patching.report", downward))
    assert MOVED["flowcore.layout"] == "flowcore.encoders.layout"
