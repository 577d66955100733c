"""MSMT17 with its validation images in the training set, as CLIP-ReID trains on it.

fastreid's ``MSMT17`` trains on ``list_train.txt`` only (30,248 images); CLIP-ReID adds
``list_val.txt`` (``train += val``: 32,621 images, the count the paper's table 1 gives).
fastreid's own way to add them, ``DATASETS.COMBINEALL``, would also merge query and gallery
into training. ``MSMT17TrainVal`` adds exactly the validation images; fastreid's ``MSMT17``
stays as it is (and is what the configs test on).
"""
from __future__ import annotations

from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.msmt17 import MSMT17

__all__ = ["MSMT17TrainVal"]


@DATASET_REGISTRY.register()
class MSMT17TrainVal(MSMT17):
    """MSMT17 (fastreid's layout: ``MSMT17_V1`` or ``MSMT17_V2`` under the root), trained on
    train + val: 1,041 identities, 32,621 images, 15 cameras.

    Labels are fastreid's ``msmt17_<pid>`` / ``msmt17_<camid>``: the validation images belong
    to training identities and cameras, and test cameras keep mapping onto the same labels.
    """

    def __init__(self, root: str = "datasets", **kwargs):
        super().__init__(root=root, **kwargs)
        if not kwargs.get("combineall", False):  # COMBINEALL already added val (fastreid)
            self._train = self.train + self.process_dir(self.train_dir, self.list_val_path)
