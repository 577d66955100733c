"""tools/gpu_check.py (`make gpu-check`, agreid.benchmarks.gpu_check): one line without CUDA; the
table; each part's commands in a dry run; the runner's failed, late and skipped parts; the workers on
a CPU at toy sizes."""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

import _warm
from agreid.benchmarks import gpu_check

# Trains, exports or starts processes: the slow tier (`make test` runs it, `make test-quick` does not).
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "gpu_check.py")
NO_CUDA = dict(os.environ, CUDA_VISIBLE_DEVICES="")


def _tool(*args, timeout=120, fresh=False):
    """``python tools/gpu_check.py ARGS`` without CUDA: in a process forked from a warm interpreter
    (tests/_warm.py), or with ``fresh`` in a new interpreter, as the user runs it."""
    if fresh:
        return subprocess.run([sys.executable, TOOL, *args], cwd=REPO, capture_output=True, text=True, env=NO_CUDA,
                              timeout=timeout)
    return _warm.run(TOOL, *args, env=NO_CUDA, timeout=timeout)


def _cells(line):
    """The cells of a markdown table line (escaped pipes stay inside their cell)."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


# ------------------------------------------------------------------------------ without CUDA


def test_without_cuda_it_prints_one_line_and_exits_0():
    proc = _tool(fresh=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [gpu_check.NO_CUDA_LINE]
    assert "nothing to check" in proc.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_gpu_check_runs_the_script_with_the_venv_python():
    proc = subprocess.run(["make", "-n", "gpu-check"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^\S*python tools/gpu_check\.py --data-root \S+$", proc.stdout, re.M), proc.stdout


# ------------------------------------------------------------------------------ table


def test_the_table_has_a_row_for_every_part_including_a_failed_one():
    rows = [gpu_check.Row("cuda-tests", gpu_check.OK, "2 passed, 0 failed", 12.3),
            gpu_check.Row("train-agreid", gpu_check.FAILED,
                          "exit status 1: RuntimeError: CUDA out of memory | tried 2 GiB\nsecond line", 40.0),
            gpu_check.Row("faiss-gpu", gpu_check.NOT_INSTALLED, "faiss 1.9 has no GPU support", 1.0),
            gpu_check.Row("synthclip", gpu_check.TIMEOUT, "stopped after 45 s (its budget: 45 s)", 45.2)]
    table = gpu_check.format_table(rows)
    lines = table.splitlines()
    assert lines[0] == "| part | status | result | s |" and lines[1].startswith("|:--")
    assert len(lines) == 2 + len(rows)
    assert all(len(_cells(line)) == 4 for line in lines)
    failed = _cells(lines[3])
    assert failed[:2] == ["train-agreid", "FAILED"]
    # One line per row: the newline is gone and the pipe is escaped.
    assert failed[2] == "exit status 1: RuntimeError: CUDA out of memory \\| tried 2 GiB second line"
    assert _cells(lines[2])[3] == "12" and _cells(lines[5])[1] == "timeout"


def test_a_long_result_is_cut():
    table = gpu_check.format_table([gpu_check.Row("x", gpu_check.OK, "y" * 1000, 0)])
    assert len(table.splitlines()[2]) < 400 and "..." in table


def test_error_line_is_the_exception_of_a_traceback():
    traceback = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n    f()\n"
                 "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n")
    assert gpu_check.error_line(traceback).startswith("torch.OutOfMemoryError: CUDA out of memory")
    assert gpu_check.error_line("loading\nerror: config file: no such file\n") == "error: config file: no such file"
    assert gpu_check.error_line("a\nlast words\n") == "last words"
    assert gpu_check.error_line("") == "(no output)"


def test_train_rows_say_whether_the_losses_are_finite():
    rate = {"per_second": 400.0, "batch": 64, "slowest": 390.0, "fastest": 410.0}
    result = {"name": "AG-ReID", "runs": 200, "warmup": 10, "amp": True, "gpu_mem_gib": 11.5, "note": None,
              "align": rate, "guide": rate, "infer": rate,
              "losses": {"align": {"finite": True, "last": 3.2, "steps": 210},
                         "guide": {"finite": True, "last": 5.1, "steps": 210}}}
    row = gpu_check.train_row("train-agreid", result, 50)
    assert row.status == gpu_check.OK
    assert "stage 1 400 features/s" in row.result and "stage 2 400 img/s" in row.result
    assert "peak GPU memory 11.50 GiB" in row.result and "losses finite" in row.result
    result["losses"]["guide"]["finite"] = False
    row = gpu_check.train_row("train-agreid", result, 50)
    assert row.status == gpu_check.FAILED and "losses NOT finite in guide" in row.result


def test_eval_rows_fail_when_cuda_and_cpu_disagree():
    entry = {"cpu_s": 6.0, "device_s": 0.5, "d_map": 0.0, "d_r1": 0.0, "mAP": 97.9}
    result = {"scale": "market 3368x15913", "dim": 1280, "device": "cuda", "eval": dict(entry),
              "rerank": dict(entry, max_ddist=1e-6)}
    rows = gpu_check.eval_rows(result, 30)
    assert [row.status for row in rows] == [gpu_check.OK, gpu_check.OK]
    assert "CPU 6.00 s, CUDA 0.50 s (x12.0)" in rows[0].result
    result["rerank"]["max_ddist"] = 0.5
    assert gpu_check.eval_rows(result, 30)[1].status == gpu_check.FAILED


def test_junit_counts_and_the_cuda_tests_row(tmp_path):
    (tmp_path / "cuda_tests.xml").write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="3" failures="1" errors="0" skipped="0">'
        '<testcase classname="tests.test_rerank" name="test_gpu_matches_dense"/>'
        '<testcase classname="tests.test_evaluation" name="test_gpu_matches_cpu">'
        '<failure message="AssertionError: Not equal to tolerance&#10;more">trace</failure></testcase>'
        '<testcase classname="tests.test_x" name="test_y"/></testsuite></testsuites>')
    ctx = gpu_check.Context(work=str(tmp_path), data_root=str(tmp_path), num_gpus=1)
    row, = gpu_check._cuda_tests_rows(ctx, [gpu_check.Outcome(1, "", 9.0)])
    assert row.status == gpu_check.FAILED
    assert row.result.startswith("2 passed, 1 failed, 0 skipped of 3")
    assert "tests.test_evaluation::test_gpu_matches_cpu: AssertionError: Not equal to tolerance" in row.result


# ------------------------------------------------------------------------------ dry run


def test_the_cuda_only_tests_are_found():
    found = gpu_check.cuda_only_tests()
    assert "tests/test_rerank.py::test_gpu_matches_dense" in found
    assert "tests/test_evaluation.py::test_gpu_matches_cpu" in found
    # skipif(torch.cuda.is_available()): the CPU-only ones are not.
    assert not any("two_processes" in test or "killed_rank" in test for test in found)


def test_every_part_builds_its_commands_without_cuda(tmp_path):
    ctx = gpu_check.Context(work=str(tmp_path / "work"), data_root=str(tmp_path / "nodata"), num_gpus=0)
    for part in gpu_check.PARTS:
        commands = part.commands(ctx)
        assert commands, part.name
        assert part.budget > 0
        for command in commands:
            assert all(isinstance(arg, str) for arg in command.argv), command
            # The scripts it runs exist, and nothing names a device: the scripts pick CUDA themselves.
            scripts = [arg for arg in command.argv if arg.endswith(".py")]
            assert all(os.path.isfile(os.path.join(REPO, script)) for script in scripts), command
            assert "cuda" not in str(command).replace("cuda_tests.xml", ""), command
    assert not os.path.exists(ctx.work), "a dry run writes nothing"
    # Every part gets its whole budget, and the check ends within 8 minutes.
    assert sum(part.budget for part in gpu_check.PARTS) <= gpu_check.DEFAULT_BUDGET <= 8 * 60


def test_the_launch_uses_every_gpu(tmp_path):
    ctx = gpu_check.Context(work=str(tmp_path), data_root=str(tmp_path), num_gpus=4)
    argv = gpu_check._launch_commands(ctx)[-1].argv
    assert argv[1:5] == [os.path.join("tools", "train_net.py"), "--num-gpus", "4", "--dist-url"]
    assert argv[argv.index("SOLVER.IMS_PER_BATCH") + 1] == "64"
    ctx.num_gpus = 1
    argv = gpu_check._launch_commands(ctx)[-1].argv
    assert argv[1:4] == ["-m", "torch.distributed.run", "--standalone"]


def test_dry_run_prints_every_part_and_runs_nothing(tmp_path):
    proc = _tool("--dry-run", "--work-dir", str(tmp_path / "work"), "--data-root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    for part in gpu_check.PARTS:
        assert f"[{part.name}]" in proc.stdout
    assert "tools/gpu_check.py --worker train --model agreid " in proc.stdout
    assert not (tmp_path / "work").exists()


def test_unknown_parts_are_refused():
    proc = _tool("--parts", "cuda-tests,warp-drive")
    assert proc.returncode != 0 and "unknown part(s) warp-drive" in proc.stderr


# ------------------------------------------------------------------------------ runner


def _ctx(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    return gpu_check.Context(work=str(work), data_root=str(tmp_path), num_gpus=1)


def _python(code):
    return gpu_check.Command([sys.executable, "-c", code])


def test_a_part_that_passes_fails_or_cannot_summarise_gets_its_row(tmp_path):
    ctx = _ctx(tmp_path)
    deadline = time.monotonic() + 120
    passing = gpu_check.Part("good", 30, lambda c: [_python("print('fine')")],
                             lambda c, outcomes: [gpu_check.Row("good", gpu_check.OK, outcomes[0].output.strip(), 0)])
    failing = gpu_check.Part("bad", 30, lambda c: [_python("print('starting'); raise ValueError('bad value')"),
                                                   _python("open('never-run', 'w')")],
                             lambda c, outcomes: [])
    unreadable = gpu_check.Part("unreadable", 30, lambda c: [_python("pass")],
                                lambda c, outcomes: [gpu_check.Row("x", "ok", str(json.load(open("/nonexistent"))), 0)])
    row, = gpu_check.run_part(passing, ctx, deadline)
    assert (row.part, row.status, row.result) == ("good", gpu_check.OK, "fine")
    row, = gpu_check.run_part(failing, ctx, deadline)
    assert row.status == gpu_check.FAILED and "exit status 1: ValueError: bad value" in row.result
    assert not os.path.exists(os.path.join(REPO, "never-run"))
    row, = gpu_check.run_part(unreadable, ctx, deadline)
    assert row.status == gpu_check.FAILED and row.result.startswith("FileNotFoundError:")


def test_a_late_part_is_stopped_with_all_it_started_and_the_rest_is_skipped(tmp_path):
    ctx = _ctx(tmp_path)
    pid_file = tmp_path / "child.pid"
    # A child that ignores SIGTERM, below a parent that would outlive the budget.
    code = ("import subprocess, sys, time; "
            "child = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)'], start_new_session=True); "
            f"open({str(pid_file)!r}, 'w').write(str(child.pid)); print('waiting', flush=True); time.sleep(300)")
    late = gpu_check.Part("late", 6, lambda c: [_python(code)], lambda c, outcomes: [])
    start = time.monotonic()
    row, = gpu_check.run_part(late, ctx, time.monotonic() + 120)
    assert row.status == gpu_check.TIMEOUT and "last output: waiting" in row.result
    assert time.monotonic() - start < 20
    child = int(pid_file.read_text())
    time.sleep(0.5)
    assert not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat").read().split()[2] == "Z"
    row, = gpu_check.run_part(late, ctx, time.monotonic() + 2)
    assert row.status == gpu_check.SKIPPED


def test_the_faiss_part_without_gpu_support_is_a_row_not_a_failure(tmp_path):
    faiss = pytest.importorskip("faiss")
    if faiss.get_num_gpus() > 0:
        pytest.skip("faiss has GPU support here")
    ctx = _ctx(tmp_path)
    part = next(part for part in gpu_check.PARTS if part.name == "faiss-gpu")
    row, = gpu_check.run_part(part, ctx, time.monotonic() + 120)
    assert row.status == gpu_check.NOT_INSTALLED and row.status in gpu_check.PASSING
    assert "faiss-gpu is not installed" in row.result


# ------------------------------------------------------------------------------ workers on a CPU


def test_the_train_worker_times_both_phases_on_synthetic_images(tiny_dataset_root, tmp_path):
    out = tmp_path / "train.json"
    proc = _tool("--worker", "train", "--model", "agreid-tiny", "--data-root", tiny_dataset_root, "--out", str(out),
                 "--runs", "1", "--warmup", "1", "--batch", "16", "--batch-infer", "16", timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["guide"]["batch"] == 16 and result["align"]["per_second"] > 0
    assert {phase: loss["steps"] for phase, loss in result["losses"].items()} == {"align": 2, "guide": 2}
    row = gpu_check.train_row("train-agreid-tiny", result, 1.0)
    assert row.status == gpu_check.OK and "losses finite" in row.result, row


def test_synthetic_batches_are_identities_of_four_and_always_full(tiny_dataset_root):
    import torch

    batches = gpu_check.SyntheticBatches(tiny_dataset_root)
    make = batches.image_batch(16, (64, 32), 702, 8, torch.device("cpu"))
    batch = make()
    assert batch["images"].shape == (16, 3, 64, 32) and batch["images"].max() > 1  # 0-255, as fastreid feeds
    assert sorted(torch.bincount(batch["targets"]).tolist())[-4:] == [4, 4, 4, 4]
    # More identities than the 16 the tiny set has: some come twice, the batch is still full.
    assert batches.image_batch(80, (64, 32), 702, 8, torch.device("cpu"))()["targets"].shape == (80,)
    with pytest.raises(ValueError, match="identities"):
        batches.image_batch(16, (64, 32), 10, 8, torch.device("cpu"))


def test_the_eval_worker_compares_two_runs_of_the_same_functions(tmp_path):
    out = tmp_path / "eval.json"
    proc = _tool("--worker", "eval", "--out", str(out), "--work", str(tmp_path / "eval"), "--eval-scale", "smoke",
                 "--eval-dim", "32", timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["scale"] == "smoke 100x600"
    rows = gpu_check.eval_rows(result, 2.0)
    assert [row.status for row in rows] == [gpu_check.OK, gpu_check.OK], rows
    assert not (tmp_path / "eval" / "smoke").exists(), "the large inputs are removed"
