"""Each DVC stage depends on the code that shapes its records, and on nothing else: in a clone,
touching one module of each kind makes ``dvc status`` name exactly the stages that module can
change (a report fix reruns only the report; a change to the process engine only the real stage;
a change to a rule every stage that runs rules; tracking and docs none).

The clone also shows that the committed dvc.lock matches the committed code: before anything is
touched, no stage has a changed code dependency."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from pipeline import PROJECT_ROOT

SIMULATED = {"tune", "runs", "paper", "scaling", "nonconvex", "hetero"}
RULES = SIMULATED | {"real"}
#: file touched -> the stages whose code dependencies change
CASES = {
    "pipeline/report/__init__.py": {"report"},
    "pipeline/core/runs.py": RULES | {"report"},
    "pipeline/engines/rpc/server.py": {"real"},
    "pipeline/engines/sim.py": RULES,
    "pipeline/engines/bulk.py": RULES,
    "pipeline/core/eventwriter.py": RULES,
    "pipeline/engines/replay.py": RULES,
    "pipeline/engines/dispatch.py": RULES,
    "pipeline/core/methods/asgd.py": RULES,
    "pipeline/compose/build.py": RULES,
    "pipeline/study/__init__.py": RULES,
    "models/objectives/quadratic.py": RULES,
    "models/datasets.py": {"data"},
    "conf/optimizer/asgd.yaml": RULES,
    "pipeline/api.py": RULES,
    "pipeline/literature/malenia.py": RULES,
    "pipeline/check_rule/kit.py": set(),
    "examples/asgd_plugin/asgd_plugin/rule.py": set(),
    "pipeline/tracking/__init__.py": set(),
    "pipeline/ui.py": set(),
    "README.md": set(),
    "docs/methods.md": set(),
    "bench/bench_sim.py": set(),
}


def _code_changes(clone) -> dict[str, set[str]]:
    """Per stage, its changed dependencies that are code (data files and params left out)."""
    out = subprocess.run(
        ["dvc", "status", "--json"], cwd=clone, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    changed: dict[str, set[str]] = {}
    for entry, items in json.loads(out.stdout or "{}").items():
        stage = entry.split(":")[-1]
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            for path in item.get("changed deps", {}):
                if not path.startswith(("data/", "results/")):
                    changed.setdefault(stage, set()).add(path)
    return changed


@pytest.mark.slow
def test_touching_one_module_makes_exactly_its_stages_stale(tmp_path):
    if shutil.which("dvc") is None:
        pytest.skip("dvc is not installed")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(PROJECT_ROOT), str(clone)], check=True)
    assert _code_changes(clone) == {}, "dvc.lock does not match the committed code"
    for path, expected in CASES.items():
        target = clone / path
        original = target.read_bytes()
        comment = b"\n<!-- touched -->\n" if path.endswith(".md") else b"\n# touched\n"
        target.write_bytes(original + comment)
        try:
            stale = set(_code_changes(clone))
        finally:
            target.write_bytes(original)
        assert stale == expected, f"touching {path}: stale {sorted(stale)}"


def test_every_stage_lists_code_deps_that_exist():
    """The paths in dvc.yaml's deps exist (a renamed module must be renamed there too)."""
    import yaml

    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    missing = [
        (name, dep)
        for name, stage in stages.items()
        for dep in stage.get("deps", [])
        if not dep.startswith(("data/", "results/")) and not (PROJECT_ROOT / dep).exists()
    ]
    assert missing == []
