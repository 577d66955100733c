"""Datasets registered in fastreid's ``DATASET_REGISTRY`` and the synthetic data generator."""
from .datasets import OccludedDuke, OccludedREID, PartialDuke, SyntheticOccluded, verify_images

__all__ = ["OccludedDuke", "OccludedREID", "PartialDuke", "SyntheticOccluded", "verify_images"]
