"""Datasets registered in fastreid's ``DATASET_REGISTRY`` and the synthetic data generator."""
from .custom import ReIDFolder, ReIDList  # registration of the datasets of your own
from .datasets import OccludedDuke, OccludedREID, PartialDuke, SyntheticOccluded, verify_images
from .msmt17 import MSMT17TrainVal  # registration

__all__ = ["MSMT17TrainVal", "OccludedDuke", "OccludedREID", "PartialDuke", "ReIDFolder", "ReIDList", "SyntheticOccluded", "verify_images"]
