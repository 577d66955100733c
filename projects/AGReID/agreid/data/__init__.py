"""Datasets registered in fastreid's ``DATASET_REGISTRY`` and the synthetic data generator."""
from .custom import ReIDFolder, ReIDList  # registration of the datasets of your own
from .datasets import OccludedDuke, OccludedREID, PartialDuke, SyntheticOccluded, verify_images
from .msmt17 import MSMT17TrainVal  # registration

__all__ = ["MSMT17TrainVal", "OccludedDuke", "OccludedREID", "PartialDuke", "ReIDFolder", "ReIDList", "SyntheticOccluded",
           "build_dataset", "dataset_root", "verify_images"]


def dataset_root(cfg) -> str:
    """``DATASETS.ROOT``, else ``$FASTREID_DATASETS``, else ``datasets`` (fastreid's rule)."""
    import os

    return cfg.DATASETS.ROOT or os.getenv("FASTREID_DATASETS", "datasets")


def build_dataset(cfg, name: str, **kwargs):
    """The registered dataset ``name`` read from :func:`dataset_root` of ``cfg``.

    ``cfg`` goes to the loader too (the datasets of your own, ``ReIDFolder`` and ``ReIDList``,
    read their keys from it; fastreid's ignore it); ``kwargs`` are passed on (``combineall``).
    """
    from fastreid.data.datasets import DATASET_REGISTRY

    return DATASET_REGISTRY.get(name)(root=dataset_root(cfg), cfg=cfg, **kwargs)
