"""Every config key AG-ReID declares is read somewhere in the package or the tools."""
import os
import re
from typing import Dict, List

import agreid
from fastreid.config import CfgNode, get_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "projects", "AGReID", "agreid")
DECLARING_FILE = os.path.join(PACKAGE, "config.py")


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


def is_read(key: str, sources: Dict[str, str]) -> bool:
    """``PARENT.LEAF`` appears in a source, or ``LEAF`` is read from a variable bound to ``...PARENT``."""
    parent, leaf = (["cfg"] + key.split("."))[-2:]  # a top-level key is read as cfg.KEY
    direct = re.compile(rf"\b{parent}\.{leaf}\b")
    alias = re.compile(rf"^\s*(\w+)\s*=\s*[^\n]*\.{parent}\b(?!\.)", re.MULTILINE)
    for text in sources.values():
        if direct.search(text):
            return True
        if any(re.search(rf"\b{name}\.{leaf}\b", text) for name in alias.findall(text)):
            return True
    return False


def test_the_check_sees_reads_and_misses():
    sources = {"a.py": "s1 = cfg.SOLVER.STAGE1\nlr = s1.BASE_LR\nx = cfg.MODEL.ATTR.ENABLED\n"}
    assert is_read("SOLVER.STAGE1.BASE_LR", sources)
    assert is_read("MODEL.ATTR.ENABLED", sources)
    assert not is_read("SOLVER.STAGE1.ETA_MIN_LR", sources)
    assert not is_read("MODEL.ATTR.DIM", sources)


def test_every_declared_key_is_read():
    keys = declared_keys()
    assert "SOLVER.STAGE1.CHECKPOINT_PERIOD" in keys and len(keys) > 20
    sources = _sources()
    unread = [key for key in keys if not is_read(key, sources)]
    assert not unread, f"declared in agreid/config.py but read nowhere: {unread}"
