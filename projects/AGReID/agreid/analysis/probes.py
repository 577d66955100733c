"""The project's one linear probe: how much of a label a set of features holds, linearly.

Every probe of the project is :func:`probe_accuracy`: the pseudo-labels V against the synthetic
attributes (``tools/probe_attributes.py``, ``tools/probe_pseudo_labels.py``) and SynthCLIP's image
embeddings against the attributes they show (``tools/zero_shot.py --linear-probe``,
:func:`agreid.synthclip.linear_probe_attributes`).

The probe and its cross-validation:

- the classifier is a standardisation (``StandardScaler``, fitted on the training folds only)
  followed by a multinomial logistic regression with L2 penalty ``C = 0.1`` (:data:`C`), up to
  2,000 iterations;
- the cross-validation is **stratified k-fold over identities, shuffled with seed 0**
  (``StratifiedGroupKFold(n_splits, shuffle=True, random_state=0)``, the groups being the
  samples' identities): every fold keeps roughly the classes' proportions, the images of one
  person are never split between training and test folds (else the probe could recognise the
  person instead of reading the attribute), and the same data always gives the same folds.
  Without ``groups`` every sample is its own identity (the pseudo-labels: one row per identity),
  and the split is ``StratifiedKFold(n_splits, shuffle=True, random_state=0)``. ``n_splits`` is
  ``folds``, lowered to the number of identities of the largest class when that is smaller (at
  least 2): every fold then has a member of each larger class, and rare classes only make
  scikit-learn warn (silenced);
- the result is the mean accuracy over the folds; a label with a single value gives 1.0.

scikit-learn is imported when a probe runs.
"""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

__all__ = ["C", "MAX_ITER", "majority_rate", "probe_accuracy", "probe_splits"]

# Inverse L2 strength and iteration cap of the logistic regression.
C = 0.1
MAX_ITER = 2000


def probe_splits(labels: np.ndarray, folds: int, groups: Optional[np.ndarray] = None):
    """The cross-validation of :func:`probe_accuracy` for ``labels`` (see the module docstring)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    labels = np.asarray(labels)
    if groups is None:
        _, counts = np.unique(labels, return_counts=True)
        largest = int(counts.max())
    else:
        groups = np.asarray(groups)
        largest = max(len(np.unique(groups[labels == value])) for value in np.unique(labels))
    n_splits = max(2, min(int(folds), largest))
    if groups is None:
        return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=0)
    return StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=0)


def probe_accuracy(features: np.ndarray, labels: np.ndarray, folds: int = 5,
                   groups: Optional[np.ndarray] = None) -> float:
    """Cross-validated accuracy of a standardised logistic regression ``features -> labels``.

    Args:
        features: (N, D) numbers, one row per sample.
        labels: (N,) class labels (strings or integers).
        folds: the number of folds (see the module docstring for when it is lowered).
        groups: (N,) the identity of each sample, when an identity has several (images); its
            samples are kept in one fold. None: one sample per identity.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return 1.0
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=MAX_ITER, C=C))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = cross_val_score(classifier, np.asarray(features), labels, groups=groups,
                                 cv=probe_splits(labels, folds, groups))
    return float(scores.mean())


def majority_rate(labels: np.ndarray) -> float:
    """Accuracy of always answering the most common value."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return float(counts.max() / counts.sum())
