"""The data step: build datasets into ``data/<name>.npz`` (``$ASGD_DATA_DIR/<name>.npz`` when
that is set, as every run reads them) from their configs in conf/dataset/.

python -m pipeline.data lstsq_paper digits     # or --all
"""

from __future__ import annotations

import argparse
import sys

from models import datasets
from pipeline import CONF_DIR
from pipeline.compose.datafiles import default_data_file
from pipeline.compose.schema import register


def build_named(name: str, force: bool = True):
    from hydra import compose, initialize_config_dir

    register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=["~experiment", f"dataset={name}"])
    path = default_data_file(cfg.dataset)
    if force or not path.exists():
        datasets.build(name, path, seed=cfg.dataset.seed, **dict(cfg.dataset.params or {}))
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m pipeline.data")
    p.add_argument("names", nargs="*")
    p.add_argument("--all", action="store_true")
    a = p.parse_args(argv)
    names = list(datasets.BUILDERS) if a.all else a.names
    unknown = [n for n in names if n not in datasets.BUILDERS]
    if unknown or not names:
        names_ok = ", ".join(datasets.BUILDERS)
        print(f"error: name datasets from {names_ok} (or --all)", file=sys.stderr)
        sys.exit(2)
    for n in names:
        print(build_named(n))


if __name__ == "__main__":
    main()
