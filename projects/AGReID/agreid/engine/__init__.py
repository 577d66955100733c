"""AG-ReID's trainer, phase hooks and launcher, on fastreid's engine."""
from ..phases import PHASES, PhasedModel, PhaseSchedule
from .feature_cache import CachedFeatureLoader, compute_feature_cache
from .hooks import PhaseCheckpointHook, PhaseEvalHook, PhaseLRScheduler, PhaseSwitchHook
from .launch import launch
from ..data import dataset_root
from .trainer import AGReIDTrainer, AtomicCheckpointer

__all__ = ["AGReIDTrainer", "AtomicCheckpointer", "CachedFeatureLoader", "PHASES", "PhaseCheckpointHook",
           "PhaseEvalHook", "PhaseLRScheduler", "PhaseSchedule", "PhaseSwitchHook", "PhasedModel",
           "compute_feature_cache", "dataset_root", "launch"]
