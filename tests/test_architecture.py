"""The tree shows the design: dependencies point one way, with no import cycle, counting imports
inside functions.

    core <- engines <- compose <- tracking <- runner <- entry points

(the entry points: train, data, study, report, ui).

``models/`` (objectives and datasets) sits beside ``pipeline.core`` and imports nothing of
``pipeline``; the package root (``pipeline/__init__.py``: errors, paths, the experiment name)
imports nothing. The entry points never import one another (the study starts
``python -m pipeline.train`` as processes; the report reads records). ``pipeline.core`` is
numpy and torch only: no Hydra, OmegaConf or MLflow.

Run it as a script to print every module's layer and imports:

    python tests/test_architecture.py
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "models")
LAYERS = {  # module prefix -> layer; a module may import only its own layer or lower ones
    "models": 0,
    "pipeline": 0,
    "pipeline.core": 1,
    "pipeline.api": 1,  # the public API: re-exports the core's protocol and the objectives'
    "pipeline.literature": 1,  # methods written only against pipeline.api
    "pipeline.engines": 2,
    "pipeline.compose": 3,
    "pipeline.tracking": 4,
    "pipeline.runner": 5,
    "pipeline.train": 6,
    "pipeline.data": 6,
    "pipeline.study": 6,
    "pipeline.report": 6,
    "pipeline.ui": 6,
    "pipeline.check_rule": 6,
}
#: third-party packages that the core must not import
NOT_IN_CORE = ("hydra", "omegaconf", "mlflow")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports(path: Path, mods: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(project modules imported anywhere in the file, top-level names of other packages)."""
    here = set()
    other = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from pkg import sub" names the submodule when there is one, else the package
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                for a in node.names
            ]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                while name not in mods:  # "import pipeline.core.methods.base as b" and the like
                    name = name.rpartition(".")[0]
                here.add(name)
            else:
                other.add(name.split(".")[0])
    return here, other


def layer_of(module: str) -> tuple[str, int]:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return best, LAYERS[best]


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, mods)[0] - {m} for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def violations(g: dict[str, set[str]]) -> list[str]:
    """Imports that point up a layer, or across entry points."""
    out = []
    for m, deps in sorted(g.items()):
        own, layer = layer_of(m)
        for d in sorted(deps):
            dep_own, dep_layer = layer_of(d)
            if dep_layer > layer:
                out.append(f"{m} (layer {layer}) imports {d} (layer {dep_layer})")
            elif dep_layer == layer == 6 and dep_own != own:
                out.append(f"{m} imports {d}: entry points never import one another")
            elif m.startswith("models") and d.startswith("pipeline"):
                out.append(f"{m} imports {d}: models/ knows nothing of the pipeline")
            elif m == "pipeline" and d != m:
                out.append(f"the package root imports {d}")
    return out


def test_no_import_cycle_counting_imports_inside_functions():
    assert cycles(graph()) == []


def test_every_import_points_down_the_layers():
    assert violations(graph()) == []


def test_every_module_has_a_layer():
    assert [m for m in modules() if not any(m == p or m.startswith(p + ".") for p in LAYERS)] == []


def test_the_core_imports_no_hydra_and_no_mlflow():
    mods = modules()
    bad = {
        m: sorted(imports(p, mods)[1] & set(NOT_IN_CORE))
        for m, p in mods.items()
        if m.startswith("pipeline.core")
    }
    assert {m: b for m, b in bad.items() if b} == {}


def test_the_checker_sees_an_upward_import_and_a_cycle(tmp_path):
    """The checks themselves can fail: an upward import and a two-module cycle are found."""
    g = {"pipeline.core.a": {"pipeline.compose.b"}, "pipeline.compose.b": {"pipeline.core.a"}}
    assert violations(g) == ["pipeline.core.a (layer 1) imports pipeline.compose.b (layer 3)"]
    assert cycles(g) == [["pipeline.compose.b", "pipeline.core.a"]]
    function_level = "def f():\n    from pipeline.runner import run_experiment\n"
    probe = tmp_path / "probe.py"
    probe.write_text(function_level)
    assert imports(probe, modules())[0] == {"pipeline.runner"}


if __name__ == "__main__":
    g = graph()
    for m, deps in sorted(g.items(), key=lambda kv: (layer_of(kv[0])[1], kv[0])):
        print(f"[{layer_of(m)[1]}] {m} -> {' '.join(sorted(deps)) or '-'}")
    problems = [" <-> ".join(c) for c in cycles(g)] + violations(g)
    print("\n".join(problems) if problems else "\nno cycle, no upward import")
    sys.exit(1 if problems else 0)
