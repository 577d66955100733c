"""Interim: the generator moved to this package; the next commit splits it into modules."""
from .drawing import *  # noqa: F401,F403
from .drawing import (BODY_REGIONS, OCCLUSION_FILE, PREVIEW_CELL_HEIGHT, PREVIEW_CELL_WIDTH,  # noqa: F401
                      PREVIEW_COLUMNS, PREVIEW_LABEL_WIDTH, PREVIEW_TITLE_HEIGHT, REGION_HIDDEN_SHARE, SPLIT_DIRS,
                      _STREAM, _appearance, _make_cameras, _make_identities, _occlude, _occluded_flags,
                      _sample_identity, _write_json, build_folder_once)
