"""Learnable slots of the attribute templates and the body region each one describes.

The region a slot describes comes from the word the slot qualifies (the next word, or the
previous one when the slots end the sentence, "carrying X X"). Regions are those of the synthetic
data's occlusion.json (head, upper, lower, feet, hidden when at least half of the region is
covered); "whole" is the person as a whole, hidden when any region is. The synthetic people carry
their bags on the torso (backpack, shoulder bag, a handbag at the hip), so "carrying" maps to the
upper body; a hat is on the head.
"""
from __future__ import annotations

import re
from typing import List

__all__ = ["SLOT_REGIONS", "slot_words", "slot_labels", "slot_regions"]

SLOT_REGIONS = {
    "person": "whole", "body": "whole",
    "hair": "head", "hat": "head",
    "upper": "upper", "carrying": "upper",
    "lower": "lower",
    "shoes": "feet",
}


def slot_words(sentence: str) -> List[str]:
    """The word each learnable ``X`` of a template qualifies ('' for a slot with no word near it).

    ``"A photo of a X X person with X X hair, ... carrying X X."`` gives
    ``["person", "person", "hair", "hair", ..., "carrying", "carrying"]``.
    """
    words = re.findall(r"[A-Za-z]+", sentence)
    is_slot = [w in ("X", "x") for w in words]
    result = []
    for index, word in enumerate(words):
        if not is_slot[index]:
            continue
        after = next((w for w, s in zip(words[index:], is_slot[index:]) if not s), None)
        before = next((w for w, s in zip(reversed(words[:index]), reversed(is_slot[:index])) if not s), None)
        result.append((after or before or "").lower())
    return result


def slot_labels(sentence: str) -> List[str]:
    """``"1 person"``, ``"2 person"``, ``"3 hair"``...: slot number (1-based) and its word."""
    return [f"{i + 1} {w}".strip() for i, w in enumerate(slot_words(sentence))]


def slot_regions(sentence: str) -> List[str]:
    """The body region of each slot of ``sentence`` ('' for a slot whose word names no region)."""
    return [SLOT_REGIONS.get(word, "") for word in slot_words(sentence)]
