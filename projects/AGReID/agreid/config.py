"""AG-ReID's config keys, added on top of fastreid's defaults, and the check of a config file."""
import torch
from fastreid.config import CfgNode as CN


def add_agreid_config(cfg: CN) -> None:
    """Add every key AG-ReID reads to a fastreid config, with its default.

    Call this on ``fastreid.config.get_cfg()`` before merging a YAML file.
    """
    _C = cfg

    # CPU first: "cuda" when a GPU is visible, "cpu" otherwise (fastreid assumes "cuda").
    _C.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

    # ---------------------------------------------------------------- backbone
    # open_clip model name: "ViT-B-16", "RN50", or "AGReID-Tiny-ViT" (shipped, for tests and CPU demo).
    _C.MODEL.BACKBONE.CLIP_NAME = "ViT-B-16"
    # Pretrained weights: an open_clip tag ("openai"), "none" for random init (tests, demo), or ""
    # (unset: fastreid's own backbones load nothing; the CLIP backbone refuses to guess).
    # A string, not fastreid's bool, so one key names the weights for every backbone.
    _C.MODEL.BACKBONE.PRETRAIN = ""
    # Overlapping patches (OLP): patch-embedding stride; 16 = no overlap, 12 in the paper's configs.
    _C.MODEL.BACKBONE.STRIDE = 16
    # Side information embedding (SIE) on the CLS token: on/off and its coefficient.
    _C.MODEL.BACKBONE.SIE_CAMERA = True
    _C.MODEL.BACKBONE.SIE_COE = 1.0
    # Number of cameras for the SIE table; 0 = take it from the training set.
    _C.MODEL.BACKBONE.NUM_CAMERAS = 0

    # ------------------------------------------------------------------ prompts
    _C.MODEL.PROMPT = CN()
    # Template name (default, longer, random, a, b, c, d) or a sentence whose "X" words are learnable.
    _C.MODEL.PROMPT.TEMPLATE = "d"
    # Std of the normal init of the per-identity learnable tokens V.
    _C.MODEL.PROMPT.INIT_STD = 0.02

    # ------------------------------------------------------- attribute encoder
    _C.MODEL.ATTR = CN()
    # Use the attribute encoder E_A and its losses (False = the CLIP-ReID baseline / "AT only").
    _C.MODEL.ATTR.ENABLED = True
    # Transformer encoder layers, heads and width of E_A (4 layers in the paper).
    _C.MODEL.ATTR.NUM_LAYERS = 4
    _C.MODEL.ATTR.NUM_HEADS = 8
    _C.MODEL.ATTR.DIM = 256
    # Hidden width of E_A's MLPs; with DIM 256 it sizes E_A to the paper's 2.76M params (ViT-B/16, r=10).
    _C.MODEL.ATTR.FFN_DIM = 704
    # lambda: weight of L_attrA in stage 1.
    _C.MODEL.ATTR.ALIGN_WEIGHT = 1.0
    # beta: weight of L_attrG in stage 2.
    _C.MODEL.ATTR.GUIDE_WEIGHT = 0.01
    # Noise-mask threshold gamma: "otsu", a percentile "p50"/"p75"/"p90" (any "pNN"), "fixed"
    # (THRESHOLD_VALUE), or "none" (no mask: the paper's gamma = -1 for holistic data).
    # Two keys because yacs reads a quoted number as a number, never as a string.
    _C.MODEL.ATTR.THRESHOLD = "otsu"
    # gamma when THRESHOLD is "fixed" (a cosine similarity; -1 masks nothing).
    _C.MODEL.ATTR.THRESHOLD_VALUE = 0.0
    # Keep training E_A in stage 2 (the paper freezes it; gradients still reach the image encoder).
    _C.MODEL.ATTR.TRAIN_IN_GUIDE = False
    # Let L_attrA's gradient reach the pseudo-labels V in stage 1 (the paper's equation 9 read
    # literally, L_feat + lambda * L_attrA optimised jointly); False detaches V, which then is
    # shaped by L_feat alone and is only E_A's target.
    _C.MODEL.ATTR.ALIGN_GRAD_TO_PROMPTS = False

    # ------------------------------------------------------------------- losses
    # Weight of the image-to-text cross-entropy L_CE of stage 2 (0 disables it).
    _C.MODEL.LOSSES.I2T = CN({"SCALE": 1.0})
    # Logits of L_CE: "raw" (the paper's and CLIP-ReID's: unnormalised f_proj . T, whose
    # temperature |f_proj| |T| moves with the template) or "cosine" (L2-normalised f_proj and T,
    # times LOGIT_SCALE; an option for small CLIPs, docs/METHOD.md).
    _C.MODEL.LOSSES.I2T.FORM = "raw"
    # Scale of the cosine logits (FORM cosine only; a float, e.g. 30.0); 0 = the loaded CLIP
    # model's own learned scale, exp(logit_scale) of its weights (e.g. SynthCLIP's).
    _C.MODEL.LOSSES.I2T.LOGIT_SCALE = 0.0
    # Weights of the two SupCon directions of stage 1.
    _C.MODEL.LOSSES.SUPCON = CN({"SCALE": 1.0})

    # Stage-2 warm-up length in epochs (from SOLVER.WARMUP_FACTOR x the base rate), used by the
    # two-phase trainer instead of fastreid's WARMUP_ITERS; SOLVER.STEPS are epochs of stage 2.
    _C.SOLVER.WARMUP_EPOCHS = 10

    # ------------------------------------------------------------------ stage 1
    # Stage 1 (phase "align") runs on cached image features; stage 2 ("guide") uses SOLVER.*.
    _C.SOLVER.STAGE1 = CN()
    # Epochs of stage 1; 0 skips it (e.g. fastreid's own Baseline, or stage 2 from a checkpoint).
    _C.SOLVER.STAGE1.MAX_EPOCH = 120
    _C.SOLVER.STAGE1.IMS_PER_BATCH = 64
    _C.SOLVER.STAGE1.OPT = "Adam"
    _C.SOLVER.STAGE1.BASE_LR = 3.5e-4
    _C.SOLVER.STAGE1.WEIGHT_DECAY = 1e-4
    # Linear warm-up from WARMUP_LR over WARMUP_EPOCHS, then cosine down to ETA_MIN_LR.
    _C.SOLVER.STAGE1.WARMUP_EPOCHS = 5
    _C.SOLVER.STAGE1.WARMUP_LR = 1e-6
    _C.SOLVER.STAGE1.ETA_MIN_LR = 1e-6
    # Save a checkpoint every N stage-1 epochs (and at the switch to stage 2).
    _C.SOLVER.STAGE1.CHECKPOINT_PERIOD = 20
    # Batch size of the one-off forward pass that fills the stage-1 feature cache.
    _C.SOLVER.STAGE1.CACHE_BATCH = 64

    # --------------------------------------------------------------------- data
    # What to do with an image that cannot be decoded, checked before training starts:
    # "error" (stop, naming every bad file), "skip" (drop it with a warning naming it), "off".
    _C.DATASETS.BAD_IMAGES = "error"
    # Root of the datasets; "" = $FASTREID_DATASETS or "datasets" (fastreid's convention).
    _C.DATASETS.ROOT = ""
    # Random erasing (INPUT.REA.ENABLED): "pixel" fills the box with per-pixel N(0, 1) noise after
    # the model's normalisation (timm's RandomErasing(mode="pixel"), as CLIP-ReID); "const" is
    # fastreid's, filling INPUT.REA.VALUE (0-255 units) before it.
    _C.INPUT.REA.MODE = "pixel"
    # Resize of test images and of the stage-1 feature cache: "bilinear" (CLIP-ReID) or
    # "bicubic" (fastreid). Training images are always resized bicubically (both do).
    _C.INPUT.INTERPOLATION_TEST = "bilinear"
    # Datasets of your own without code, ReIDFolder and ReIDList: DATASETS.FOLDER.*, DATASETS.LIST.*.
    from .data.custom import add_custom_data_config

    add_custom_data_config(_C)

    # ------------------------------------------------------------- reliability
    # Seed of every random generator (python, numpy, torch; each process adds its rank).
    # -1 = a fresh seed each run, written into OUTPUT_DIR/config.yaml so the run can be repeated.
    _C.SEED = -1
    # Deterministic algorithms only (torch.use_deterministic_algorithms, no cuDNN benchmark):
    # with a fixed SEED two runs give the same weights; slower on GPUs. Each epoch's data and
    # randomness then start from (SEED, epoch) alone (the loader restarts each epoch), so a run
    # killed anywhere and resumed with --resume ends with the weights of the uninterrupted run.
    _C.DETERMINISTIC = False
    # Train from a MODEL.WEIGHTS checkpoint of another architecture (other #ids, template, ...):
    # parameters that do not fit are re-initialised and listed. False = such a checkpoint stops.
    _C.MODEL.WEIGHTS_FINETUNE = False
    # Training camera labels in SIE-row order (set by the trainer; test cameras map onto them).
    _C.MODEL.BACKBONE.TRAIN_CAMERAS = []
    # A test camera training never saw: "error" (stop before any work, naming it) or "mean"
    # (the mean SIE row, a camera-agnostic embedding, with a warning).
    _C.TEST.UNSEEN_CAMERA = "error"


class ConfigFileError(ValueError):
    """A config file that cannot be read as a fastreid YAML config (the message names the file)."""


def check_config_file(path: str, _chain: tuple = ()) -> None:
    """Check that ``path`` and the ``_BASE_`` files it inherits from are YAML mappings.

    Raises:
        ConfigFileError: a missing file, a directory, bad YAML (with its line), an empty file,
            a file that is not a mapping of keys, or a ``_BASE_`` cycle; the message names the file.
    """
    import os

    import yaml

    shown = " (inherited through _BASE_ from " + " -> ".join(_chain) + ")" if _chain else ""
    if os.path.realpath(path) in {os.path.realpath(p) for p in _chain}:
        raise ConfigFileError(f"config file {path}: _BASE_ cycle: {' -> '.join((*_chain, path))}")
    if os.path.isdir(path):
        raise ConfigFileError(f"config file {path}{shown} is a directory, not a YAML file")
    if not os.path.isfile(path):
        raise ConfigFileError(f"config file {path}{shown} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigFileError(f"config file {path}{shown} is not valid YAML{line}: {problem}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigFileError(f"config file {path}{shown} cannot be read: {error}") from None
    if data is None:
        raise ConfigFileError(f"config file {path}{shown} is empty: it sets no keys")
    if not isinstance(data, dict):
        raise ConfigFileError(f"config file {path}{shown} holds a YAML {type(data).__name__}, not a mapping of "
                              f"keys (e.g. 'MODEL:' then indented keys)")
    base = data.get("_BASE_")
    if base is not None:
        if not isinstance(base, str) or not base:
            raise ConfigFileError(f"config file {path}: _BASE_ must name one file, not {base!r}")
        base = os.path.expanduser(base)
        if not os.path.isabs(base):
            base = os.path.join(os.path.dirname(path), base)  # fastreid's rule: relative to the file
        check_config_file(base, (*_chain, path))


def get_agreid_cfg(config_file: str = "", opts=()) -> CN:
    """fastreid's defaults + AG-ReID's keys, then ``config_file`` and ``KEY VALUE`` overrides.

    Raises:
        ConfigFileError: ``config_file`` cannot be read as a config (:func:`check_config_file`).
    """
    from fastreid.config import get_cfg

    cfg = get_cfg()
    add_agreid_config(cfg)
    if config_file:
        check_config_file(config_file)
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    from .data.custom import apply_no_camera_rule

    apply_no_camera_rule(cfg)
    return cfg
