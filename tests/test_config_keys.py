"""Every config key AG-ReID declares is read somewhere in the package or the tools.

A key counts as read only where code reads it (found with :mod:`ast`, not by text search, so a
key named in a docstring, a comment or an error message does not count):

- an attribute chain, ``cfg.TEST.UNSEEN_CAMERA`` (loaded, not assigned), or ``LEAF`` read from
  a variable bound to ``...PARENT`` (``s1 = cfg.SOLVER.STAGE1`` then ``s1.BASE_LR``);
- ``PARENT.get("LEAF")``, ``PARENT["LEAF"]`` or ``getattr(PARENT, "LEAF")`` on a config node,
  or ``getattr(PARENT, name)`` with a computed name where the file holds ``LEAF`` as a string in
  any case (``getattr(cfg.DATASETS.LIST, split.upper())`` for ``split in ("train", "query")``);
- a string literal that is exactly the dotted key, ``"MODEL.BACKBONE.NUM_CAMERAS"`` (read with
  ``_lookup(cfg, key)``, e.g. from a tuple of keys such as ``ARCHITECTURE_KEYS``); a docstring or
  an f-string never counts.
"""
import ast
import functools
import os
from typing import Dict, List, Set, Tuple

import agreid
from fastreid.config import CfgNode, get_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "projects", "AGReID", "agreid")
DECLARING_FILE = os.path.join(PACKAGE, "config.py")

Pair = Tuple[str, str]
# The leaf of getattr(node, name) when name is computed.
COMPUTED = "*"


def _leaves(node: CfgNode, prefix: str = "") -> Dict[str, object]:
    out = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, CfgNode):
            out.update(_leaves(value, path + "."))
        else:
            out[path] = value
    return out


def declared_keys() -> List[str]:
    """Keys that add_agreid_config adds to fastreid's defaults."""
    cfg = get_cfg()
    agreid.add_agreid_config(cfg)
    return sorted(set(_leaves(cfg)) - set(_leaves(get_cfg())))


def _sources() -> Dict[str, str]:
    files = []
    for root, _, names in os.walk(PACKAGE):
        files += [os.path.join(root, n) for n in names if n.endswith(".py")]
    tools = os.path.join(REPO, "tools")
    files += [os.path.join(tools, n) for n in os.listdir(tools) if n.endswith(".py")]
    return {f: open(f, encoding="utf-8").read() for f in files if f != DECLARING_FILE}


# What agreid.phases.solver_node(cfg, phase) returns: cfg.SOLVER.STAGE1 or cfg.SOLVER.
SOLVER_NODES = ("STAGE1", "SOLVER")


def _last_name(node: ast.AST) -> str:
    """``cfg.SOLVER.STAGE1`` -> ``STAGE1``; ``cfg`` -> ``cfg``; anything else -> ``""``."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _docstrings(tree: ast.AST) -> Set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


@functools.lru_cache(maxsize=None)
def reads_of(text: str) -> Tuple[Set[Pair], Set[str]]:
    """The ``(PARENT, LEAF)`` pairs a source reads from config nodes, and its dotted key strings."""
    tree = ast.parse(text)
    # Names bound to a config node: ``s1 = cfg.SOLVER.STAGE1`` binds s1 to STAGE1, and
    # ``solver = solver_node(cfg, phase)`` (agreid.phases) to both nodes it may return.
    aliases: Dict[str, Set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            inner = {id(n.value) for n in ast.walk(node.value) if isinstance(n, ast.Attribute)}
            ends = [n.attr for n in ast.walk(node.value) if isinstance(n, ast.Attribute) and id(n) not in inner]
            if any(isinstance(n, ast.Call) and _last_name(n.func) == "solver_node" for n in ast.walk(node.value)):
                ends += SOLVER_NODES
            aliases.setdefault(node.targets[0].id, set()).update(ends)

    def parents(node: ast.AST) -> Set[str]:
        name = _last_name(node)
        return {name} | (aliases.get(name, set()) if isinstance(node, ast.Name) else set())

    pairs: Set[Pair] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            pairs.update((parent, node.attr) for parent in parents(node.value))
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            leaf = node.slice
            if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str):
                pairs.update((parent, leaf.value) for parent in parents(node.value))
        elif isinstance(node, ast.Call) and node.args:
            is_getattr = isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) > 1
            if is_getattr:
                owner, leaf = node.args[0], node.args[1]
            elif isinstance(node.func, ast.Attribute) and node.func.attr == "get":
                owner, leaf = node.func.value, node.args[0]
            else:
                continue
            if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str):
                pairs.update((parent, leaf.value) for parent in parents(owner))
            elif is_getattr:
                pairs.update((parent, COMPUTED) for parent in parents(owner))
    skip = _docstrings(tree) | {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
                                for part in ast.walk(node)}
    strings = {node.value for node in ast.walk(tree)
               if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip}
    return pairs, strings


def is_read(key: str, sources: Dict[str, str]) -> bool:
    """Whether ``key`` is read in one of ``sources`` (file name -> text), as the module docstring says."""
    parent, leaf = (["cfg"] + key.split("."))[-2:]  # a top-level key is read as cfg.KEY
    for text in sources.values():
        pairs, strings = reads_of(text)
        if (parent, leaf) in pairs or key in strings:
            return True
        if (parent, COMPUTED) in pairs and leaf.lower() in {string.lower() for string in strings}:
            return True
    return False


def test_the_check_sees_reads_and_misses():
    sources = {"a.py": "s1 = cfg.SOLVER.STAGE1\nlr = s1.BASE_LR\nx = cfg.MODEL.ATTR.ENABLED\n"}
    assert is_read("SOLVER.STAGE1.BASE_LR", sources)
    through_phases = {"b.py": "solver = solver_node(cfg, phase)\nrate = solver.WARMUP_LR\n"}
    assert is_read("SOLVER.STAGE1.WARMUP_LR", through_phases) and is_read("SOLVER.WARMUP_LR", through_phases)
    assert not is_read("SOLVER.STAGE1.ETA_MIN_LR", through_phases)
    assert is_read("MODEL.ATTR.ENABLED", sources)
    assert not is_read("SOLVER.STAGE1.ETA_MIN_LR", sources)
    assert not is_read("MODEL.ATTR.DIM", sources)


def test_the_check_counts_only_code_that_reads_the_key():
    key = "TEST.UNSEEN_CAMERA"
    not_reads = [
        'def f(cfg):\n    """Uses TEST.UNSEEN_CAMERA and cfg.TEST.UNSEEN_CAMERA."""\n',
        'def f(cfg, rule):\n    raise ValueError(f"TEST.UNSEEN_CAMERA must be error, not {rule!r}")\n',
        'def f(cfg):\n    raise ValueError("set TEST.UNSEEN_CAMERA mean")\n',
        'def f(cfg):\n    pass  # cfg.TEST.UNSEEN_CAMERA\n',
        'def f(cfg):\n    cfg.TEST.UNSEEN_CAMERA = "mean"\n',
        'def f(cfg):\n    return cfg.TEST.get("OTHER", "error")\n',
        'rules = [getattr(cfg.TEST, name.upper()) for name in ("other",)]\n',
    ]
    for text in not_reads:
        assert not is_read(key, {"a.py": text}), text
    reads = [
        'rule = cfg.TEST.UNSEEN_CAMERA\n',
        'rule = cfg.TEST.get("UNSEEN_CAMERA", "error")\n',
        'rule = cfg.TEST["UNSEEN_CAMERA"]\n',
        'rule = getattr(cfg.TEST, "UNSEEN_CAMERA")\n',
        'test = cfg.TEST\nrule = test.get("UNSEEN_CAMERA")\n',
        'KEYS = ("MODEL.NAME", "TEST.UNSEEN_CAMERA")\nrules = [_lookup(cfg, key) for key in KEYS]\n',
        'rule = _lookup(cfg, "TEST.UNSEEN_CAMERA")\n',
        'rules = [getattr(cfg.TEST, name.upper()) for name in ("unseen_camera",)]\n',
    ]
    for text in reads:
        assert is_read(key, {"a.py": text}), text


def test_every_declared_key_is_read():
    keys = declared_keys()
    assert "SOLVER.STAGE1.CHECKPOINT_PERIOD" in keys and len(keys) > 20
    sources = _sources()
    unread = [key for key in keys if not is_read(key, sources)]
    assert not unread, f"declared in agreid/config.py but read nowhere: {unread}"
