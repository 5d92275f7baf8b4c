"""Opt-in: ``ASGD_PLUGIN_SEARCHPATH=1`` puts ``pkg://asgd_plugin.conf`` on Hydra's search path
of every composition, the pipeline's preflight included.

The documented route is ``hydra.searchpath=[pkg://asgd_plugin.conf]`` on the command line, but
the pipeline's preflight (pipeline/compose/preflight.py, 0.1.0) composes every job without the
``hydra.*`` overrides, so it refuses ``optimizer=delay_capped`` before Hydra runs. A Hydra
SearchPathPlugin is seen by every composition. It is off unless the variable is set, so that
installing this example changes nothing else (the pipeline's own option lists stay its own).
"""

from __future__ import annotations

import os

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

ENV = "ASGD_PLUGIN_SEARCHPATH"


class AsgdPluginSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if os.environ.get(ENV, "") not in ("", "0"):
            search_path.append(provider="asgd-plugin", path="pkg://asgd_plugin.conf")
