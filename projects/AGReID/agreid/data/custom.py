"""Your own dataset without writing a loader: ``ReIDFolder`` and ``ReIDList`` (docs/CUSTOM_DATA.md).

- ``ReIDFolder``: Market-style file names ``PPPP_cC_*.jpg`` (person id, camera from 1) under
  ``DATASETS.ROOT/<DATASETS.FOLDER.NAME>/{bounding_box_train,query,bounding_box_test}``.
- ``ReIDList``: one CSV per split (``DATASETS.LIST.TRAIN``, ``QUERY``, ``GALLERY``) with the
  columns ``path,pid`` and optionally ``camid``; paths are relative to the CSV's folder, ids
  may be numbers or names. A split left empty is absent (e.g. a test-only dataset).

The no-camera rule. Without a ``camid`` column there is nothing for SIE to learn and the
protocol's same-camera filter would drop every true match. So :func:`apply_no_camera_rule`
(run by ``get_agreid_cfg``) turns SIE off when a training ``ReIDList`` has no camera ids, and
the query and gallery images are put in two different cameras (0 and 1), with a warning.
"""
from __future__ import annotations

import csv
import logging
import os
from typing import Dict, List, Optional, Tuple

from fastreid.config import CfgNode as CN
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.bases import ImageDataset

from .datasets import DatasetLayoutError, _BoundingBoxDataset

logger = logging.getLogger(__name__)

_PID_COLUMNS = ("pid", "id", "identity")
_SPLITS = ("train", "query", "gallery")
# Cameras given to query and gallery images when the CSVs have none (module docstring).
NO_CAMERA_QUERY, NO_CAMERA_GALLERY = 0, 1


def add_custom_data_config(cfg: CN) -> None:
    """Add the keys of ``ReIDFolder`` and ``ReIDList`` to ``cfg``."""
    cfg.DATASETS.FOLDER = CN()
    # ReIDFolder: the dataset's folder under DATASETS.ROOT (Market-style layout inside).
    cfg.DATASETS.FOLDER.NAME = ""
    cfg.DATASETS.LIST = CN()
    # ReIDList: CSV files (path,pid[,camid]) of each split; relative to DATASETS.ROOT unless absolute.
    cfg.DATASETS.LIST.TRAIN = ""
    cfg.DATASETS.LIST.QUERY = ""
    cfg.DATASETS.LIST.GALLERY = ""


def _root(cfg) -> str:
    return cfg.DATASETS.ROOT or os.getenv("FASTREID_DATASETS", "datasets")


def _need_cfg(name: str, cfg):
    if cfg is None:
        raise ValueError(f"{name} reads its settings from the config: build it with cfg=cfg "
                         f"(the AG-ReID trainer does).")
    return cfg


@DATASET_REGISTRY.register()
class ReIDFolder(_BoundingBoxDataset):
    """A Market-1501-style folder of your own: ``DATASETS.ROOT/<DATASETS.FOLDER.NAME>/...``.

    File names ``PPPP_cC_anything.jpg``: ``PPPP`` the person id (-1 = junk, dropped), ``C``
    the camera, counted from 1.
    """

    # Any number of cameras (file names are checked for a camera >= 1 only).
    NUM_CAMERAS = 10 ** 6

    def __init__(self, root: str = "datasets", cfg=None, **kwargs):
        cfg = _need_cfg("ReIDFolder", cfg)
        name = cfg.DATASETS.FOLDER.NAME.strip()
        if not name:
            raise ValueError("ReIDFolder: set DATASETS.FOLDER.NAME to the dataset's folder under DATASETS.ROOT.")
        self.root = root
        self.dataset_name = name.lower()
        self.LAYOUT = (f"  {name}/bounding_box_train/0001_c1_f0000001.jpg ...\n"
                       f"  {name}/query/*.jpg\n  {name}/bounding_box_test/*.jpg\n"
                       "(file names PPPP_cC_*.jpg: person id PPPP, camera C >= 1)")
        self.dataset_dir = os.path.join(root, name)
        self.train_dir = os.path.join(self.dataset_dir, "bounding_box_train")
        self.query_dir = os.path.join(self.dataset_dir, "query")
        self.gallery_dir = os.path.join(self.dataset_dir, "bounding_box_test")
        self._require([self.dataset_dir, self.query_dir, self.gallery_dir])
        # A test-only folder may have no training split.
        train = self.process_dir(self.train_dir, is_train=True) if os.path.isdir(self.train_dir) else []
        query = self.process_dir(self.query_dir, is_train=False)
        gallery = self.process_dir(self.gallery_dir, is_train=False)
        ImageDataset.__init__(self, train, query, gallery, **kwargs)


def _resolve(cfg, path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(_root(cfg), path)


def read_list(csv_file: str) -> Tuple[List[Tuple[str, str, Optional[str]]], bool]:
    """Rows ``(path, pid, camid or None)`` of a ReIDList CSV, and whether it has a camid column.

    Raises:
        DatasetLayoutError: missing file, missing columns, or an empty cell (file and line named).
    """
    if not os.path.isfile(csv_file):
        raise DatasetLayoutError(f"ReIDList: CSV file not found: {csv_file}")
    with open(csv_file, newline="") as handle:
        reader = csv.DictReader(handle)
        header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
        pid_column = next((c for c in _PID_COLUMNS if c in header), None)
        if "path" not in header or pid_column is None:
            raise DatasetLayoutError(f"ReIDList: {csv_file} needs a header with 'path' and 'pid' "
                                     f"(and optionally 'camid'); it has {header}")
        has_camids = "camid" in header
        base = os.path.dirname(os.path.abspath(csv_file))
        rows = []
        for number, raw in enumerate(reader, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
            if not row.get("path") or not row.get(pid_column) or (has_camids and not row.get("camid")):
                raise DatasetLayoutError(f"ReIDList: {csv_file} line {number}: empty path, pid or camid")
            rows.append((os.path.join(base, row["path"]), row[pid_column], row["camid"] if has_camids else None))
    if not rows:
        raise DatasetLayoutError(f"ReIDList: {csv_file} lists no images")
    missing = [path for path, _, _ in rows if not os.path.isfile(path)]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DatasetLayoutError(f"ReIDList: {csv_file} lists images that do not exist: "
                                 f"{', '.join(missing[:5])}{more}")
    return rows, has_camids


def csv_has_camids(csv_file: str) -> bool:
    """Whether a ReIDList CSV has a ``camid`` column (False for a missing file)."""
    if not os.path.isfile(csv_file):
        return False
    with open(csv_file, newline="") as handle:
        header = handle.readline()
    return "camid" in [h.strip().lower() for h in header.split(",")]


@DATASET_REGISTRY.register()
class ReIDList(ImageDataset):
    """Your own dataset as CSV files: ``DATASETS.LIST.{TRAIN,QUERY,GALLERY}`` (module docstring)."""

    dataset_name = "reidlist"

    def __init__(self, root: str = "datasets", cfg=None, **kwargs):
        cfg = _need_cfg("ReIDList", cfg)
        files = {split: getattr(cfg.DATASETS.LIST, split.upper()).strip() for split in _SPLITS}
        if not files["train"] and not (files["query"] and files["gallery"]):
            raise ValueError("ReIDList: set DATASETS.LIST.TRAIN and/or DATASETS.LIST.QUERY and "
                             "DATASETS.LIST.GALLERY to CSV files (path,pid[,camid]).")
        lists = {split: read_list(_resolve(cfg, f)) if f else ([], True) for split, f in files.items()}
        train = [(path, f"{self.dataset_name}_{pid}", f"{self.dataset_name}_{camid or 0}")
                 for path, pid, camid in lists["train"][0]]
        if not lists["train"][1]:
            logger.warning("ReIDList: %s has no camid column: every training image is in one camera "
                           "and SIE is off (MODEL.BACKBONE.SIE_CAMERA False).", files["train"])
        query, gallery = self._test_items(lists, files)
        super().__init__(train, query, gallery, **kwargs)

    @staticmethod
    def _test_items(lists: Dict[str, tuple], files: Dict[str, str]):
        (query_rows, query_cams), (gallery_rows, gallery_cams) = lists["query"], lists["gallery"]
        if not query_rows:
            return [], []
        _check_id_case(query_rows, gallery_rows, files)
        # Evaluation compares integer ids: names get numbers shared by query and gallery.
        names = sorted({pid for _, pid, _ in query_rows + gallery_rows if not pid.lstrip("-").isdigit()})
        numbers = {name: i for i, name in enumerate(names, start=1 + max(
            [int(pid) for _, pid, _ in query_rows + gallery_rows if pid.lstrip("-").isdigit()] or [0]))}

        def items(rows, has_camids, default_camid):
            return [(path, int(pid) if pid.lstrip("-").isdigit() else numbers[pid],
                     int(camid) if has_camids else default_camid) for path, pid, camid in rows]

        if not (query_cams and gallery_cams):
            logger.warning("ReIDList: %s or %s has no camid column: query images are put in camera %d "
                           "and gallery images in camera %d, so the same-camera filter of the "
                           "evaluation keeps every match.", files["query"], files["gallery"],
                           NO_CAMERA_QUERY, NO_CAMERA_GALLERY)
            return (items(query_rows, False, NO_CAMERA_QUERY), items(gallery_rows, False, NO_CAMERA_GALLERY))
        return items(query_rows, True, 0), items(gallery_rows, True, 0)


def _check_id_case(query_rows, gallery_rows, files: Dict[str, str]) -> None:
    """Ids are compared exactly: a query id that is in the gallery only in another letter case
    (``Ab`` and ``ab``) would silently have no true match."""
    gallery_ids = {pid for _, pid, _ in gallery_rows}
    folded = {pid.casefold(): pid for pid in gallery_ids}
    for path, pid, _ in query_rows:
        if pid not in gallery_ids and pid.casefold() in folded:
            raise DatasetLayoutError(
                f"ReIDList: query id {pid!r} ({files['query']}: {path}) is in {files['gallery']} only as "
                f"{folded[pid.casefold()]!r}: ids are compared exactly, letter case included. Write each "
                f"person's id the same way in both lists.")


def apply_no_camera_rule(cfg: CN) -> None:
    """Turn SIE off when a training ``ReIDList`` CSV has no ``camid`` column (with a warning)."""
    if "ReIDList" not in tuple(cfg.DATASETS.NAMES) or not cfg.MODEL.BACKBONE.SIE_CAMERA:
        return
    train_csv = cfg.DATASETS.LIST.TRAIN.strip()
    if train_csv and os.path.isfile(_resolve(cfg, train_csv)) and not csv_has_camids(_resolve(cfg, train_csv)):
        logger.warning("ReIDList: %s has no camid column: MODEL.BACKBONE.SIE_CAMERA set to False "
                       "(SIE has no cameras to learn).", train_csv)
        cfg.MODEL.BACKBONE.SIE_CAMERA = False
