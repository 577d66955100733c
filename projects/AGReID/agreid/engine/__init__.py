"""AG-ReID's trainer, phase hooks and launcher, on fastreid's engine."""
from .hooks import PhaseLRScheduler, PhaseSwitchHook
from .launch import launch
from .trainer import AGReIDTrainer, AtomicCheckpointer, dataset_root

__all__ = ["AGReIDTrainer", "AtomicCheckpointer", "PhaseLRScheduler", "PhaseSwitchHook",
           "dataset_root", "launch"]
