"""Methods of the literature, written only against the public API (:mod:`pipeline.api`) and
registered the way a user's package registers its rules: ``conf/optimizer/<name>.yaml`` with
``_target_`` (docs/extending.md). Each is specified in docs/methods.md, sections 3.7-3.9."""

from pipeline.literature.malenia import MaleniaSGD
from pipeline.literature.picky import PickySGD
from pipeline.literature.rescaled import RescaledASGD

__all__ = ["MaleniaSGD", "PickySGD", "RescaledASGD"]
