"""Writing a dataset folder: the JSON ground truth, the marker written last, :func:`generate` and the preview."""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from PIL import Image, ImageDraw, ImageFont

from .drawing import make_cameras, render_images
from .people import make_identities, make_plan
from .schema import (ATTRIBUTES_FILE, ATTRIBUTE_SCHEMA, DATASET_DIR, GENERATOR_VERSION, IMAGE_HEIGHT, IMAGE_WIDTH,
                     MARKER_FILE, OCCLUSION_FILE, PRESETS, SPLIT_DIRS, PathLike)

__all__ = [
    "PREVIEW_CELL_HEIGHT",
    "PREVIEW_CELL_WIDTH",
    "PREVIEW_COLUMNS",
    "PREVIEW_LABEL_WIDTH",
    "PREVIEW_TITLE_HEIGHT",
    "build_folder_once",
    "generate",
    "is_complete",
    "write_json",
    "write_preview",
]

logger = logging.getLogger(__name__)


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as sorted, indented JSON with a final newline (the byte format of every JSON file written)."""
    path.write_text(json.dumps(payload, sort_keys=True, indent=1) + "\n")


def _read_marker(dataset_dir: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads((dataset_dir / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None


def is_complete(dataset_dir: PathLike) -> bool:
    """Whether ``dataset_dir`` holds a finished synthetic dataset (its marker file is written last)."""
    marker = _read_marker(Path(dataset_dir))
    return marker is not None and marker.get("version") == GENERATOR_VERSION


def _summary(marker: Dict[str, Any], dataset_dir: Path, skipped: bool) -> Dict[str, Any]:
    return {"path": str(dataset_dir), "preset": marker["preset"], "seed": marker["seed"],
            "splits": marker["splits"], "skipped": skipped}


def generate(root: PathLike, preset: str = "tiny", seed: int = 0, overwrite: bool = False,
             num_workers: Optional[int] = None) -> Dict[str, Any]:
    """Write the synthetic dataset to ``root/SyntheticOccluded`` and return a summary.

    Args:
        root: folder that receives ``SyntheticOccluded`` (fastreid's ``DATASETS.ROOT``).
        preset: a key of ``PRESETS``.
        seed: the same preset and seed give byte-identical files.
        overwrite: replace a dataset made with another preset or seed, or an unfinished folder.
        num_workers: drawing processes; by default one per CPU for large datasets, else one.

    Returns:
        ``{"path", "preset", "seed", "splits": {split: {"ids", "images", "occluded"}}, "skipped"}``;
        ``skipped`` is True when the same dataset was already complete and nothing was written.

    Raises:
        KeyError: unknown preset.
        FileExistsError: the folder holds something else and ``overwrite`` is False.
    """
    if preset not in PRESETS:
        raise KeyError(f"unknown synthetic preset {preset!r}; choose from {sorted(PRESETS)}")
    config = PRESETS[preset]

    def draw(work_dir: Path) -> Dict[str, Any]:
        identities, hard_pairs = make_identities(config, seed)
        plan = make_plan(config, identities, seed)
        for folder in SPLIT_DIRS.values():
            (work_dir / folder).mkdir()
        items = [item for split in ("train", "query", "gallery") for item in plan[split]]
        context = {"seed": seed, "identities": identities, "cameras": make_cameras(config.num_cameras, seed),
                   "dataset_dir": str(work_dir)}
        logger.info("Drawing %d synthetic images (preset %s, seed %d)", len(items), preset, seed)
        records = render_images(items, context, num_workers)

        write_json(work_dir / ATTRIBUTES_FILE, {
            "schema": ATTRIBUTE_SCHEMA,
            "identities": {f"{pid:04d}": identity["attributes"] for pid, identity in identities.items()},
            "hard_pairs": hard_pairs,
        })
        write_json(work_dir / OCCLUSION_FILE, records)
        splits = {split: {"ids": len({item["pid"] for item in plan[split]}), "images": len(plan[split]),
                          "occluded": sum(item["occluded"] for item in plan[split])} for split in plan}
        return {"preset": preset, "seed": seed, "version": GENERATOR_VERSION, "splits": splits,
                "config": asdict(config)}

    return build_folder_once(Path(root) / DATASET_DIR, "synthetic dataset", preset, seed, GENERATOR_VERSION,
                             overwrite, draw)


def build_folder_once(folder: Path, kind: str, preset: str, seed: int, version: int, overwrite: bool,
                      build: Callable[[Path], Dict[str, Any]]) -> Dict[str, Any]:
    """Make a generated ``folder`` once: skip it when its marker says (preset, seed, version) are
    the same, refuse a foreign or older folder unless ``overwrite``, and build anything new in a
    temporary sibling folder (``build(work_dir)`` fills it and returns the marker), renamed into
    place only when complete. Returns :func:`_summary`."""
    marker = _read_marker(folder)
    if marker is not None and (marker.get("preset"), marker.get("seed"), marker.get("version")) == (
            preset, seed, version):
        logger.info("The %s %s (preset %s, seed %d) is already complete", kind, folder, preset, seed)
        return _summary(marker, folder, skipped=True)
    if folder.exists() and not overwrite:
        found = (f"a {kind} with preset {marker.get('preset')!r}, seed {marker.get('seed')!r}, "
                 f"version {marker.get('version')!r}" if marker else "an unfinished or foreign folder")
        raise FileExistsError(f"{folder} holds {found}; pass overwrite=True (--overwrite) to replace it")

    folder.parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f".{folder.name}-partial-", dir=folder.parent))
    try:
        new_marker = build(work_dir)
        write_json(work_dir / MARKER_FILE, new_marker)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(work_dir, folder)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    # mkdtemp makes the folder private; give it the usual permissions of a data folder.
    os.chmod(folder, 0o755)
    logger.info("Wrote the %s to %s: %s", kind, folder, new_marker["splits"])
    return _summary(new_marker, folder, skipped=False)


# Preview contact sheet geometry, in pixels.
PREVIEW_COLUMNS = 10
PREVIEW_LABEL_WIDTH = 150
PREVIEW_CELL_WIDTH = IMAGE_WIDTH + 8
PREVIEW_CELL_HEIGHT = IMAGE_HEIGHT + 30
PREVIEW_TITLE_HEIGHT = 24


def _preview_ids(attributes: Dict[str, Any], splits_of_id: Dict[str, str], num_ids: int) -> List[str]:
    """Rows to show: one hard pair of each split side by side, then train and test ids alternately."""
    chosen: List[str] = []
    for split in ("train", "test"):
        for first, second, _ in attributes["hard_pairs"]:
            if splits_of_id.get(first) == split and len(chosen) + 2 <= num_ids:
                chosen += [first, second]
                break
    by_split = {split: [pid for pid in sorted(splits_of_id) if splits_of_id[pid] == split and pid not in chosen]
                for split in ("train", "test")}
    while len(chosen) < num_ids and (by_split["train"] or by_split["test"]):
        for split in ("train", "test"):
            if by_split[split] and len(chosen) < num_ids:
                chosen.append(by_split[split].pop(0))
    return chosen


def _across_cameras(names: List[str]) -> List[str]:
    """Queries first, then the other images taking each camera in turn, so a row shows every camera."""
    queries = [name for name in names if name.startswith(SPLIT_DIRS["query"] + "/")]
    by_camera: Dict[str, List[str]] = {}
    for name in names:
        if name not in queries:
            by_camera.setdefault(name.split("_c")[1].split("_")[0], []).append(name)
    ordered = list(queries)
    while any(by_camera.values()):
        ordered += [by_camera[camera].pop(0) for camera in sorted(by_camera) if by_camera[camera]]
    return ordered


def write_preview(dataset_dir: PathLike, out_png: PathLike, num_ids: int = 8) -> str:
    """Write a contact sheet of ``num_ids`` identities: one row each, their images across cameras.

    Each row starts with the identity's attributes; each cell is labelled with its split
    (T train, Q query, G gallery) and camera, and occluded images get a red frame and the
    share of the body hidden. The size is ``PREVIEW_LABEL_WIDTH + PREVIEW_COLUMNS *
    PREVIEW_CELL_WIDTH`` by ``PREVIEW_TITLE_HEIGHT + num_ids * PREVIEW_CELL_HEIGHT``.

    Returns:
        The path of the PNG written.
    """
    dataset_dir = Path(dataset_dir)
    attributes = json.loads((dataset_dir / ATTRIBUTES_FILE).read_text())
    occlusion = json.loads((dataset_dir / OCCLUSION_FILE).read_text())
    images_of_id: Dict[str, List[str]] = {}
    splits_of_id: Dict[str, str] = {}
    for name in sorted(occlusion, key=lambda n: (n.split("/")[0] != "query", n)):
        pid = name.split("/")[1][:4]
        images_of_id.setdefault(pid, []).append(name)
        splits_of_id[pid] = "train" if name.startswith(SPLIT_DIRS["train"]) else "test"
    rows = _preview_ids(attributes, splits_of_id, num_ids)
    twin_of = {pair[1]: (pair[0], pair[2]) for pair in attributes["hard_pairs"]}

    sheet = Image.new("RGB", (PREVIEW_LABEL_WIDTH + PREVIEW_COLUMNS * PREVIEW_CELL_WIDTH,
                              PREVIEW_TITLE_HEIGHT + num_ids * PREVIEW_CELL_HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(11)
    draw.text((4, 4), f"{dataset_dir.name}: T=train Q=query G=gallery, red frame = occluded (share of body hidden)",
              fill=(0, 0, 0), font=font)
    short = {"train": "T", "query": "Q", "gallery": "G"}
    split_of_dir = {folder: split for split, folder in SPLIT_DIRS.items()}
    for row, pid in enumerate(rows):
        y = PREVIEW_TITLE_HEIGHT + row * PREVIEW_CELL_HEIGHT
        if row:
            draw.line([(0, y - 2), (sheet.width, y - 2)], fill=(200, 200, 200))
        person = attributes["identities"][pid]
        lines = [f"id {pid} ({splits_of_id[pid]})",
                 f"{person['body_shape']}, {person['height']}",
                 f"hair {person['hair_length']} {person['hair_color']}",
                 f"up {person['upper_color']} {person['upper_pattern']}",
                 f"  {person['upper_sleeve']} sleeves",
                 f"low {person['lower_color']} {person['lower_length']}",
                 f"bag {person['bag']}",
                 f"hat {person['hat']}, shoes {person['shoes']}"]
        if pid in twin_of:
            lines.append(f"= {twin_of[pid][0]} but {twin_of[pid][1]}")
        for index, text in enumerate(lines):
            draw.text((4, y + 4 + index * 14), text, fill=(150, 0, 0) if text.startswith("=") else (0, 0, 0), font=font)
        for column, name in enumerate(_across_cameras(images_of_id[pid])[:PREVIEW_COLUMNS]):
            x = PREVIEW_LABEL_WIDTH + column * PREVIEW_CELL_WIDTH + 4
            record = occlusion[name]
            if record["fraction"] > 0:
                draw.rectangle([x - 3, y - 1, x + IMAGE_WIDTH + 2, y + IMAGE_HEIGHT + 2], fill=(220, 0, 0))
            sheet.paste(Image.open(dataset_dir / name).convert("RGB"), (x, y + 1))
            camid = name.split("_c")[1].split("_")[0]
            label = f"{short[split_of_dir[name.split('/')[0]]]} c{camid}"
            if record["fraction"] > 0:
                label += f" {record['fraction']:.0%}"
            draw.text((x, y + IMAGE_HEIGHT + 4), label, fill=(0, 0, 0), font=font)
            if record["fraction"] > 0:
                draw.text((x, y + IMAGE_HEIGHT + 16), record["occluder"], fill=(180, 0, 0), font=font)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return str(out_png)
