"""The docs cannot drift from the schemas: README.md's option tables, docs/options.md and the
group and key lines of --help are what pipeline.compose.options generates from the schemas and
conf/; every key the README names exists; the MLflow store is described one way everywhere."""

from __future__ import annotations

import re

import pytest

from pipeline import CONF_DIR, PROJECT_ROOT
from pipeline.compose import options

README = PROJECT_ROOT / "README.md"


def test_readme_tables_are_generated_from_the_schemas():
    text = README.read_text()
    for begin, end in ((options.OPTIONS_BEGIN, options.OPTIONS_END),
                       (options.RPC_BEGIN, options.RPC_END)):  # fmt: skip
        assert text.count(begin) == 1 and text.count(end) == 1
    assert options.readme_text(text) == text, "python -m pipeline.compose.options --write"


def test_help_text_and_the_options_page_are_generated_from_the_schemas():
    config = (CONF_DIR / "config.yaml").read_text()
    assert options.config_text(config) == config, "python -m pipeline.compose.options --write"
    page = (PROJECT_ROOT / "docs" / "options.md").read_text()
    assert page == options.reference(), "python -m pipeline.compose.options --write"


def test_every_key_has_one_meaning_and_no_meaning_is_stale():
    keys = set(options.keys())
    assert sorted(keys - set(options.KEY_HELP)) == []
    assert sorted(set(options.KEY_HELP) - keys) == []
    assert set(options.MAIN_KEYS) <= keys and len(set(options.MAIN_KEYS)) == len(options.MAIN_KEYS)


def test_every_group_lists_every_option_of_conf():
    for group in options.DOC_GROUPS:
        files = {p.stem for p in (CONF_DIR / group).glob("*.yaml")}
        assert set(options.options(group)) == files, group
    assert "exponential" in options.options("topology") and "rpc" in options.options("engine")


KEY = re.compile(r"(?<![\w.])((?:optimizer|topology|objective|dataset|engine|tracking|budget)"
                 r"\.[a-z_]+)(?![\w(])")  # fmt: skip


@pytest.mark.parametrize("doc", ["README.md", "docs/methods.md", "RELIABILITY.md"])
def test_every_key_the_docs_name_exists(doc):
    """A key named in prose or in a command (``optimizer.stop_stale``, say) that no schema has
    fails here; generated blocks are checked above."""
    text = (PROJECT_ROOT / doc).read_text()
    named = set(KEY.findall(text))
    typos = {"optimizer.lrr", "topology.n_worker"}  # RELIABILITY.md shows what a typo gets
    unknown = sorted(k for k in named - typos if k not in options.keys())
    assert unknown == []
    for typo in typos & named:
        assert re.search(re.escape(typo) + r".{0,80}did you mean", text), typo


def test_the_checker_catches_a_removed_key():
    assert "optimizer.stop_stale" not in options.keys()
    assert KEY.findall("set `optimizer.stop_stale` or optimizer.cancel=true") == [
        "optimizer.stop_stale",
        "optimizer.cancel",
    ]


def test_the_mlflow_store_is_described_one_way():
    where = options.STORE_LOCATION
    assert where in README.read_text()
    assert where in (PROJECT_ROOT / "docs" / "options.md").read_text()
    assert where in (CONF_DIR / "tracking" / "mlflow.yaml").read_text()
    assert where.replace("$", "$$") in (CONF_DIR / "config.yaml").read_text()  # --help
