"""The package's structure: no import circle, the phase names in one file, one record per phase."""
import ast
import os

import pytest

import agreid
from agreid.phases import ALIGN, COSINE, FEATURES, GUIDE, IMAGES, PHASES, PhaseSchedule, phase_records, solver_node

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.dirname(os.path.abspath(agreid.__file__))
ROOT = os.path.dirname(PACKAGE)


def _modules():
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[module[:-len(".__init__")] if module.endswith(".__init__") else module] = path
    return found


def _imports(module, path, modules):
    """The package modules ``module`` imports anywhere in its body (functions included)."""
    package = module.split(".") if path.endswith("__init__.py") else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in modules else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules and m != module}


def _cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return result


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_between_the_package_modules():
    """Imports inside functions count too: a circle broken only by a late import is still one."""
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    assert {"agreid.engine.cameras", "agreid.data"} <= graph["agreid.engine.preflight"]  # late imports count
    assert _cycles(graph) == []


def test_no_phase_name_outside_phases_py():
    """Code compares with ALIGN/GUIDE or asks the phase record; only phases.py spells the names
    (docstrings, comments and messages may mention them)."""
    offenders = []
    for module, path in _modules().items():
        if module == "agreid.phases":
            continue
        tree = ast.parse(open(path, encoding="utf-8").read())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        in_messages = {id(value) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
                       for value in node.values}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and node.value in PHASES and id(node) not in docstrings
                    and id(node) not in in_messages):
                offenders.append(f"{module}:{node.lineno}")
    assert offenders == []


def test_phase_records_say_what_each_phase_reads():
    cfg = agreid.get_agreid_cfg()
    cfg.defrost()
    cfg.SOLVER.STAGE1.IMS_PER_BATCH, cfg.SOLVER.IMS_PER_BATCH = 48, 32
    cfg.SOLVER.STAGE1.MAX_EPOCH, cfg.SOLVER.MAX_EPOCH = 7, 5
    cfg.SOLVER.STAGE1.CHECKPOINT_PERIOD, cfg.SOLVER.CHECKPOINT_PERIOD = 3, 2
    records = phase_records(cfg)
    align, guide = records[ALIGN], records[GUIDE]
    assert (align.solver_key, align.data, align.batch_size, align.epochs, align.checkpoint_period) == \
        ("SOLVER.STAGE1", FEATURES, 48, 7, 3)
    assert (guide.solver_key, guide.data, guide.batch_size, guide.epochs, guide.checkpoint_period) == \
        ("SOLVER", IMAGES, 32, 5, 2)
    assert (align.lr_shape, align.bias_factors, align.evaluated) == (COSINE, False, False)
    assert guide.bias_factors and guide.evaluated and guide.end_checkpoint is None
    assert (align.checkpoint_prefix, align.end_checkpoint, guide.checkpoint_prefix) == \
        ("model_stage1_", "model_stage1", "model_")
    # Each record's solver key names the node solver_node returns.
    for phase, record in records.items():
        node = cfg
        for part in record.solver_key.split("."):
            node = node[part]
        assert node is solver_node(cfg, phase)

    schedule = PhaseSchedule.from_config(cfg, align_iters_per_epoch=4, guide_iters_per_epoch=9)
    assert (schedule.stage1_epochs, schedule.stage2_epochs, schedule.max_epoch) == (7, 5, 12)
    assert schedule.record(GUIDE) == guide and schedule.iterations_before(8) == 7 * 4 + 9
    with pytest.raises(ValueError, match="without a config"):
        PhaseSchedule(1, 1).record(ALIGN)
    with pytest.raises(ValueError, match="Unknown phase 'stage2'"):
        schedule.record("stage2")


def _python_files(*folders):
    for folder in folders:
        for parent, _, files in os.walk(os.path.join(REPO, folder)):
            yield from (os.path.join(parent, name) for name in files if name.endswith(".py"))


def test_no_sys_path_edit_and_no_importlib_loader_in_tools_or_tests():
    """Tools are shells over the package and tests import the package: nothing puts a folder on
    sys.path or loads a file as a module by hand."""
    offenders = []
    files = list(_python_files("tools", "tests", os.path.join("projects", "AGReID", "agreid")))
    assert any(path.endswith(os.path.join("tools", "train_net.py")) for path in files)
    for path in files:
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("insert", "append", "extend")
                    and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "path"
                    and isinstance(node.func.value.value, ast.Name) and node.func.value.value.id == "sys"):
                offenders.append(f"{path}:{node.lineno} sys.path.{node.func.attr}")
            if isinstance(node, ast.Attribute) and node.attr in ("spec_from_file_location", "module_from_spec"):
                offenders.append(f"{path}:{node.lineno} importlib {node.attr}")
    assert offenders == []
