"""Builds the rule under check the way the pipeline does: its optimizer config in a temporary
config directory, composed with a small least-squares problem into one config per run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import CONF_DIR, ConfigError

LR = 0.05
#: the worker-time settings of the protocol runs (extra overrides of each)
SETTINGS = {
    "homogeneous": ("topology=homogeneous",),
    "linear": ("topology=linear",),
    "straggler": ("topology=straggler", "topology.stragglers=1", "topology.factor=10"),
}


def derived_name(target: str) -> str:
    from pipeline.core.methods import METHODS

    name = target.rpartition(".")[2].lower() or "rule"
    return f"{name}_rule" if name in METHODS else name


def parse_keys(items: list[str]) -> dict[str, Any]:
    """``key=value`` arguments, values read as YAML (``3``, ``true``, ``null``, ``[1,2]``)."""
    from omegaconf import OmegaConf

    bad = [a for a in items if "=" not in a or not a.split("=", 1)[0]]
    if bad:
        raise ConfigError(f"give the rule's keys as key=value, got {bad[0]!r}")
    return OmegaConf.to_container(OmegaConf.from_dotlist(list(items)))


class Setup:
    """The temporary data file and config directory every run of a check composes from."""

    def __init__(self, target: str, keys: dict[str, Any], root: Path):
        from omegaconf import OmegaConf

        from models import datasets
        from pipeline.compose.plugins import check_plugin

        node = {"_target_": target, "name": derived_name(target), "lr": LR, **keys}
        check_plugin(OmegaConf.create(node))  # a bad path or key: the pipeline's one line
        self.root = root
        self.data = datasets.build("small_lstsq", root / "small_lstsq.npz", seed=0)
        conf = root / "conf" / "optimizer"
        conf.mkdir(parents=True)
        (conf / "_check_rule.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(node)))
        self.runs = 0

    def cfg(self, setting: str, n: int, gradients: int, seed: int, *extra: str):
        from hydra import compose, initialize_config_dir

        import pipeline.compose.schema  # noqa: F401  (registers the schemas)

        overrides = [
            "optimizer=_check_rule", f"hydra.searchpath=[file://{self.root / 'conf'}]",
            "dataset=small_lstsq", f"dataset.path={self.data}", *SETTINGS[setting],
            f"topology.n_workers={n}", "topology.noise=exponential", "batch_size=8",
            f"budget.gradients={gradients}", "eval_every=5", "tracking=none", "progress=off",
            f"seed={seed}", *extra,
        ]  # fmt: skip
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return compose(config_name="config", overrides=overrides)

    def outdir(self, label: str) -> Path:
        self.runs += 1
        return self.root / "runs" / f"{self.runs:02d}-{label}"
