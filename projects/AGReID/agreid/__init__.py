"""AG-ReID: attribute guidance with inherent pseudo-labels for occluded person re-identification.

``import agreid`` patches fastreid 1.4.0 for today's Python/PyTorch (see :mod:`agreid.compat`)
and registers the project's datasets, backbone, heads and meta-architecture in fastreid's
registries.
"""
from . import compat

compat.apply()

from .config import add_agreid_config, get_agreid_cfg  # noqa: E402
from .modeling.clip_loader import skip_pretrained_weights  # noqa: E402
from . import data as _data  # noqa: E402,F401  # registration
from . import modeling as _modeling  # noqa: E402,F401  # registration
from . import engine, evaluation  # noqa: E402,F401
from .predictor import Predictor  # noqa: E402

__version__ = "0.1.0"

__all__ = ["Predictor", "add_agreid_config", "compat", "get_agreid_cfg", "engine", "evaluation", "skip_pretrained_weights", "__version__"]
