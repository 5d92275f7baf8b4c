"""An example plugin for the pipeline: a server rule and a model, written against
``pipeline.api`` only, with their configs in ``asgd_plugin/conf`` (examples/asgd_plugin/README.md).
"""

from asgd_plugin.data import make_blobs
from asgd_plugin.model import ResidualMLP
from asgd_plugin.rule import DelayCappedASGD

__all__ = ["DelayCappedASGD", "ResidualMLP", "make_blobs"]
