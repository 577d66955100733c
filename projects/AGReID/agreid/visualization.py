"""Rank-list pictures: a query tile, then one or more panels of ranked gallery tiles.

Shared by ``tools/visualize_ranklist.py`` (registered datasets, one or two checkpoints) and
``tools/search.py`` (your own images). A tile's frame is green for a match, red for a
non-match and grey when the identity is unknown; its caption (``1``/``0``, or a score) is
written under it so the picture reads without colour too.
"""
from __future__ import annotations

import dataclasses
import os
from typing import List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw

TILE_SIZE: Tuple[int, int] = (64, 128)  # (width, height) of an image inside its frame
BORDER = 4
MATCH_COLOR = (40, 170, 60)
MISMATCH_COLOR = (210, 40, 40)
UNKNOWN_COLOR = (150, 150, 150)
QUERY_COLOR = (60, 60, 200)
_TITLE_HEIGHT = 14
_CAPTION_HEIGHT = 14
_PANEL_GAP = 16


@dataclasses.dataclass
class RankedImage:
    """One gallery image in a rank list.

    Attributes:
        path: image file.
        match: True/False when the identity is known, None when it is not (e.g. a search).
        caption: text under the tile; defaults to ``1``/``0`` for a known match.
    """

    path: str
    match: Optional[bool] = None
    caption: str = ""

    def text(self) -> str:
        """The caption to draw."""
        if self.caption:
            return self.caption
        return "" if self.match is None else ("1" if self.match else "0")


@dataclasses.dataclass
class RankPanel:
    """One model's ranked gallery for a query, with a title (e.g. ``"AG-ReID  AP 0.58"``)."""

    title: str
    images: List[RankedImage]


@dataclasses.dataclass
class RankRow:
    """A query and one panel per model."""

    query_path: str
    query_title: str
    panels: List[RankPanel]


def framed_tile(path: str, color, size: Tuple[int, int] = TILE_SIZE, border: int = BORDER) -> Image.Image:
    """The image at ``path`` resized to ``size`` inside a ``border``-pixel frame of ``color``.

    Raises:
        ValueError: the image cannot be read (the message names the file).
    """
    try:
        with Image.open(path) as img:
            picture = img.convert("RGB").resize(size)
    except Exception as error:  # any decoder error is reported with the file's name
        raise ValueError(f"cannot read image {path}: {type(error).__name__}: {error}") from error
    framed = Image.new("RGB", (size[0] + 2 * border, size[1] + 2 * border), color)
    framed.paste(picture, (border, border))
    return framed


def _color(match: Optional[bool]):
    return UNKNOWN_COLOR if match is None else (MATCH_COLOR if match else MISMATCH_COLOR)


def draw_rank_rows(rows: Sequence[RankRow], tile_size: Tuple[int, int] = TILE_SIZE) -> Image.Image:
    """A picture of ``rows``: each query tile, then its panels left to right.

    All panels of all rows are drawn as wide as the longest one, so columns line up.
    """
    if not rows:
        raise ValueError("No rank-list rows to draw.")
    tile_w, tile_h = tile_size[0] + 2 * BORDER, tile_size[1] + 2 * BORDER
    num_panels = max(len(row.panels) for row in rows)
    columns = max((len(panel.images) for row in rows for panel in row.panels), default=0)
    panel_w = columns * tile_w
    row_h = _TITLE_HEIGHT + tile_h + _CAPTION_HEIGHT
    width = tile_w + num_panels * (_PANEL_GAP + panel_w)
    sheet = Image.new("RGB", (width, len(rows) * row_h), "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        top = r * row_h
        draw.text((2, top + 1), row.query_title, fill="black")
        sheet.paste(framed_tile(row.query_path, QUERY_COLOR, tile_size), (0, top + _TITLE_HEIGHT))
        for p, panel in enumerate(row.panels):
            left = tile_w + _PANEL_GAP + p * (_PANEL_GAP + panel_w)
            # The query title may run over the first panel's title line: start panel titles after it.
            title_x = max(left, draw.textlength(row.query_title) + 8) if p == 0 else left
            draw.text((title_x, top + 1), panel.title, fill="black")
            for k, ranked in enumerate(panel.images):
                x = left + k * tile_w
                sheet.paste(framed_tile(ranked.path, _color(ranked.match), tile_size), (x, top + _TITLE_HEIGHT))
                text = ranked.text()
                if text:
                    text_w = draw.textlength(text)
                    draw.text((x + (tile_w - text_w) / 2, top + _TITLE_HEIGHT + tile_h + 1), text,
                              fill=_color(ranked.match) if ranked.match is not None else "black")
    return sheet


def save_picture(picture: Image.Image, path: str) -> str:
    """Save ``picture`` to ``path``, creating its folder; returns the path."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    picture.save(path)
    return path
