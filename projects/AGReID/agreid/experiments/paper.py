"""The paper's numbers (its tables 2-6), quoted as the paper's, written once.

All are the paper's ViT-B/16 results in percent; nothing here was measured by this project.
``None`` where the paper gives no number. ``tools/reproduce_paper.py``
(:mod:`agreid.experiments.reproduce`) puts them beside the real-data measurements and
``tools/ablate.py`` (:mod:`agreid.experiments.ablations`) beside the synthetic-data ablations.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Optional, Tuple

Numbers = Optional[Tuple[float, ...]]

# Table 2, occluded and partial data: test set -> model -> (mAP, Rank-1).
TABLE2: Dict[str, Dict[str, Numbers]] = {
    "OccludedDuke": {"CLIP-ReID": (60.0, 67.8), "AG-ReID": (63.2, 70.4)},
    "OccludedREID": {"CLIP-ReID": None, "AG-ReID": (87.6, 90.1)},
    "PartialDuke": {"CLIP-ReID": None, "AG-ReID": (84.5, 91.8)},
}
# Table 3, holistic data: test set -> model -> (mAP, Rank-1).
TABLE3: Dict[str, Dict[str, Numbers]] = {
    "MSMT17": {"CLIP-ReID": (75.8, 89.7), "AG-ReID": (76.7, 90.1)},
    "Market1501": {"CLIP-ReID": (90.5, 95.4), "AG-ReID": (90.8, 95.8)},
    "DukeMTMC": {"CLIP-ReID": (83.1, 90.8), "AG-ReID": (83.3, 91.0)},
}
# Tables 4-6 are on Occluded-Duke: (mAP, R@1, R@5, R@10).
# Table 4, dual guidance: row -> ((Baseline, AT, AP) check marks, numbers). The check marks are
# lost in the paper's text; its AP-only row is table 5's "Default Prompt" row (the same
# configuration), which fixes which of rows 2 and 3 is AT only.
TABLE4: "OrderedDict[str, Tuple[Tuple[str, str, str], Tuple[float, ...]]]" = OrderedDict([
    ("baseline", (("✓", "", ""), (60.0, 67.8, 80.1, 85.2))),
    ("at", (("✓", "✓", ""), (62.4, 69.7, 81.7, 86.2))),
    ("ap", (("✓", "", "✓"), (62.2, 69.2, 81.9, 86.3))),
    ("at_ap", (("✓", "✓", "✓"), (63.2, 70.4, 82.4, 86.4))),
])
# Table 5, prompt templates: template -> (the paper's row label, numbers).
TABLE5: "OrderedDict[str, Tuple[str, Tuple[float, ...]]]" = OrderedDict([
    ("default", ("Default Prompt", (62.2, 69.2, 81.9, 86.3))),
    ("longer", ("Longer Prompt", (62.0, 69.9, 82.1, 86.2))),
    ("random", ("Random Prompt", (62.1, 69.5, 81.6, 86.1))),
    ("a", ("Attribute Prompt a", (62.6, 69.8, 82.4, 86.2))),
    ("b", ("Attribute Prompt b", (63.0, 70.5, 82.0, 86.5))),
    ("c", ("Attribute Prompt c", (62.8, 69.9, 82.6, 86.1))),
    ("d", ("Attribute Prompt d", (63.2, 70.4, 82.4, 86.4))),
])
# Table 6, noise-mask threshold: threshold -> (the paper's row label, numbers).
TABLE6: "OrderedDict[str, Tuple[str, Tuple[float, ...]]]" = OrderedDict([
    ("p50", ("P50", (61.9, 69.9, 82.7, 86.0))),
    ("p75", ("P75", (62.5, 70.6, 82.5, 86.3))),
    ("p90", ("P90", (62.8, 70.5, 82.3, 86.0))),
    ("otsu", ("Otsu", (63.2, 70.4, 82.4, 86.4))),
])
