"""tools/print_results.py (agreid.experiments.print_results): the last results table of a run's
log, as `make demo` prints it."""
from pathlib import Path

import _warm
from agreid.experiments import print_results

REPO = Path(__file__).resolve().parents[1]

LOG = """[12/01 09:00:00] fastreid.evaluation.testing INFO: Evaluation results in csv format:
| Dataset           | Rank-1   | Rank-5   | Rank-10   | mAP   | mINP   | metric   |
|:------------------|:---------|:---------|:----------|:------|:-------|:---------|
| SyntheticOccluded | 10.00    | 20.00    | 30.00     | 15.00 | 5.00   | 12.50    |
[12/01 09:10:00] fastreid.evaluation.testing INFO: Evaluation results in csv format:
| Dataset           | Rank-1   | Rank-5   | Rank-10   | mAP   | mINP   | metric   |
|:------------------|:---------|:---------|:----------|:------|:-------|:---------|
| SyntheticOccluded | 28.91    | 55.86    | 68.36     | 33.94 | 25.39  | 31.42    |
"""


def _run(*args):
    """``python tools/print_results.py ARGS``, in a process forked from a warm interpreter (tests/_warm.py)."""
    return _warm.run(str(REPO / "tools/print_results.py"), *args, timeout=60)


def test_prints_the_last_evaluation_of_each_run(tmp_path):
    (tmp_path / "log.txt").write_text(LOG)
    result = _run(str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"| {tmp_path} | SyntheticOccluded | 33.94 | 28.91 | 55.86 | 68.36 | 25.39 |" in result.stdout


def test_a_run_without_results_is_named(tmp_path):
    result = _run(str(tmp_path / "unfinished"))
    assert result.returncode == 2 and "unfinished/log.txt holds no evaluation results" in result.stderr


def test_several_runs_in_one_table_in_process(tmp_path, capsys):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "log.txt").write_text(LOG)
    assert print_results.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["| run | test set | mAP | Rank-1 | Rank-5 | Rank-10 | mINP |", "|---|---|---:|---:|---:|---:|---:|"]
    assert lines[2:] == [f"| {tmp_path / n} | SyntheticOccluded | 33.94 | 28.91 | 55.86 | 68.36 | 25.39 |" for n in "ab"]
    assert print_results.main([str(tmp_path / "a"), str(tmp_path / "missing")]) == 2
    assert "missing/log.txt holds no evaluation results" in capsys.readouterr().err
