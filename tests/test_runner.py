"""agreid.experiments.runner: the one runner of tools/ablate.py and tools/reproduce_paper.py, with a
stand-in for tools/train_net.py (nothing is trained)."""
import json
import os

import pytest

from agreid.experiments import common
from agreid.experiments.runner import Job, Runner, logged_seconds, metrics_from_log

LOG = """[12/01 07:56:03 fastreid.evaluation.testing]: Evaluation results in csv format:
| Dataset           | Rank-1   | Rank-5   | Rank-10   | mAP   | mINP   |
|:------------------|:---------|:---------|:----------|:------|:-------|
| SyntheticOccluded | 12.50    | 37.11    | 47.66     | 17.41 | 11.71  |
[12/01 07:58:33 fastreid.engine.defaults]: done
"""


@pytest.fixture
def trainings(monkeypatch):
    """train_net.py's stand-in: records each command, writes the evaluation into OUTPUT_DIR's log;
    a command naming a folder in ``failing`` exits 3 instead."""
    calls, failing = [], set()

    def run_logged(cmd, log_path, cwd=common.REPO, env=None):
        calls.append(list(cmd))
        folder = os.path.dirname(log_path)
        os.makedirs(folder, exist_ok=True)
        with open(log_path, "a") as f:
            f.write("$ " + " ".join(cmd) + "\n")
        if folder in failing:
            with open(log_path, "a") as f:
                f.write("CUDA out of memory\n")
            return 3
        with open(os.path.join(folder, "log.txt"), "w") as f:
            f.write(LOG)
        with open(os.path.join(folder, "model_final.pth"), "w") as f:
            f.write("")
        return 0

    monkeypatch.setattr(common, "run_logged", run_logged)
    monkeypatch.setattr(common, "machine", lambda: {"cpu_count": 2, "cuda_devices": 0})
    run_logged.calls, run_logged.failing = calls, failing
    return run_logged


def _job(tmp_path, name, seed=0, fingerprint="f" * 16, **kw):
    return Job(name=name, config_file=f"configs/Synthetic/ablations/{name}.yml",
               output_dir=str(tmp_path / "runs" / name / f"seed{seed}"), overrides=("SEED", str(seed)), seed=seed,
               result_path=str(tmp_path / "results" / name / f"seed{seed}.json"), test_set="SyntheticOccluded",
               fingerprint=fingerprint, fields={"run": name, "seed": seed, "leaf": f"{name}.yml"},
               identity=("run", "leaf"), **kw)


def _record(tmp_path, name, seed=0):
    return json.loads((tmp_path / "results" / name / f"seed{seed}.json").read_text())


def test_identical_configs_train_once_and_share(tmp_path, trainings, capsys):
    jobs = [_job(tmp_path, "at_ap"), _job(tmp_path, "template_d"), _job(tmp_path, "at", fingerprint="a" * 16),
            _job(tmp_path, "template_d", seed=1)]
    new = []
    runner = Runner("ablate", "tools/ablate.py", on_result=new.append)
    assert runner.run(jobs) == 0
    printed = capsys.readouterr().out
    # template_d seed 1 has no twin of its seed: trained.
    assert [c[c.index("OUTPUT_DIR") + 1] for c in trainings.calls] == [
        str(tmp_path / "runs" / n) for n in ("at_ap/seed0", "at/seed0", "template_d/seed1")]
    assert "[ablate] template_d seed 0: same config as at_ap, result shared" in printed
    trained, shared = _record(tmp_path, "at_ap"), _record(tmp_path, "template_d")
    assert shared == dict(trained, run="template_d", leaf="template_d.yml", same_as="at_ap")
    assert len(new) == 4 and new[1] == shared
    # The record: the job's fields, then the runner's keys.
    assert set(trained) == {"run", "seed", "leaf", "fingerprint", "metrics", "seconds", "resumed", "output_dir",
                            "command", "finished", "machine"}
    assert trained["metrics"]["mAP"] == 17.41 and trained["fingerprint"] == "f" * 16 and trained["resumed"] is False
    assert trained["command"] == trainings.calls[0][1:] and trained["command"][:3] == [
        common.TRAIN_NET, "--config-file", "configs/Synthetic/ablations/at_ap.yml"]
    # A second sitting skips everything and trains nothing.
    assert Runner("ablate", "tools/ablate.py").run(jobs) == 0
    assert len(trainings.calls) == 3 and capsys.readouterr().out.count("skipped") == 4


def test_a_twin_of_an_earlier_sitting_is_shared(tmp_path, trainings, capsys):
    assert Runner("ablate", "tools/ablate.py").run([_job(tmp_path, "at_ap")]) == 0
    everything = lambda: {(r["run"], r["seed"]): r for r in  # noqa: E731
                          (json.loads(p.read_text()) for p in sorted((tmp_path / "results").rglob("*.json")))}
    assert Runner("ablate", "tools/ablate.py", everything).run([_job(tmp_path, "threshold_otsu")]) == 0
    assert len(trainings.calls) == 1 and _record(tmp_path, "threshold_otsu")["same_as"] == "at_ap"


def test_a_record_of_another_config_is_refused(tmp_path, trainings):
    common.write_json(str(tmp_path / "results" / "at" / "seed0.json"),
                      {"run": "at", "seed": 0, "fingerprint": "0123456789abcdef", "metrics": {"mAP": 1.0}})
    message = (f"tools/ablate.py: {tmp_path / 'results' / 'at' / 'seed0.json'} was measured with another config "
               f"(fingerprint 0123456789abcdef, now {'f' * 16}: other overrides or a changed leaf). "
               "Use another --output, or delete that file to measure again.")
    with pytest.raises(SystemExit) as stop:
        Runner("ablate", "tools/ablate.py", changed="a changed leaf").run([_job(tmp_path, "at")])
    assert stop.value.code == message and not trainings.calls
    with pytest.raises(SystemExit, match="other overrides or a changed config"):
        Runner("reproduce", "tools/reproduce_paper.py", dry_run=True).plan([_job(tmp_path, "at")])


def test_a_record_without_fingerprint_counts_as_this_config(tmp_path, trainings, capsys):
    """reproduce_paper.py wrote no fingerprint before the runner: such a record is done, and shared."""
    common.write_json(str(tmp_path / "results" / "at_ap" / "seed0.json"), {"metrics": {"mAP": 9.0}})
    assert Runner("x", "tools/x.py").run([_job(tmp_path, "at_ap"), _job(tmp_path, "template_d")]) == 0
    assert "at_ap seed 0: done (9.00 mAP), skipped" in capsys.readouterr().out and not trainings.calls
    assert _record(tmp_path, "template_d") == {"metrics": {"mAP": 9.0}, "run": "template_d", "leaf": "template_d.yml",
                                               "same_as": "at_ap"}


def test_a_run_finished_before_its_record_is_read_from_its_log(tmp_path, trainings, capsys):
    job = _job(tmp_path, "at")
    folder = tmp_path / "runs" / "at" / "seed0"
    folder.mkdir(parents=True)
    (folder / "model_final.pth").write_bytes(b"")
    (folder / "last_checkpoint").write_text("model_final.pth")
    (folder / "log.txt").write_text(LOG)
    assert Runner("ablate", "tools/ablate.py").run([job]) == 0
    assert f"[ablate] at seed 0: finished earlier, reading {folder / 'log.txt'}" in capsys.readouterr().out
    assert not trainings.calls and not (folder / "stdout.txt").exists()
    record = _record(tmp_path, "at")
    assert record["metrics"]["Rank-1"] == 12.5 and record["seconds"] == 150.0 and record["resumed"] is True
    assert metrics_from_log(str(folder / "log.txt"), "OccludedDuke") is None and logged_seconds(str(folder / "log.txt")) == 150


def test_a_checkpoint_resumes(tmp_path, trainings, capsys):
    interrupted = tmp_path / "runs" / "at" / "seed1"
    interrupted.mkdir(parents=True)
    (interrupted / "last_checkpoint").write_text("model_0000003.pth")
    runner = Runner("ablate", "tools/ablate.py", num_gpus=2)
    steps = runner.plan([_job(tmp_path, "at", 0), _job(tmp_path, "at", 1)])
    assert [s.state for s in steps] == ["train", "resume"]
    assert "--resume" not in steps[0].command and steps[1].command[3:7] == [
        "configs/Synthetic/ablations/at.yml", "--num-gpus", "2", "--resume"]
    assert runner.run([_job(tmp_path, "at", 0), _job(tmp_path, "at", 1)]) == 0
    assert [("--resume" in c) for c in trainings.calls] == [False, True]
    assert "at seed 1: resume: " in capsys.readouterr().out
    assert [_record(tmp_path, "at", s)["resumed"] for s in (0, 1)] == [False, True]


def test_a_dry_run_plans_and_writes_nothing(tmp_path, trainings, capsys):
    runner = Runner("ablate", "tools/ablate.py", dry_run=True)
    jobs = [_job(tmp_path, "at_ap"), _job(tmp_path, "template_d"), _job(tmp_path, "at", fingerprint="a" * 16)]
    assert runner.run(jobs) == 0
    printed = capsys.readouterr().out
    assert "[ablate] at_ap seed 0: train: " in printed
    assert "[ablate] template_d seed 0: same config as at_ap, would share its result" in printed
    assert runner.planned == {("f" * 16, 0): "at_ap", ("a" * 16, 0): "at"}
    assert not trainings.calls and not (tmp_path / "results").exists()
    assert [(s.state, s.twin) for s in runner.plan(jobs)] == [("train", None), ("planned_twin", "at_ap"),
                                                              ("train", None)]


def test_a_failed_run_stops_or_is_counted(tmp_path, trainings, capsys):
    trainings.failing.add(str(tmp_path / "runs" / "at" / "seed0"))
    jobs = [_job(tmp_path, "at", fingerprint="a" * 16), _job(tmp_path, "ap")]
    assert Runner("ablate", "tools/ablate.py", keep_going=True).run(jobs) == 1
    err = capsys.readouterr().err
    assert f"[ablate] at seed 0 failed (exit 3); its output: {tmp_path / 'runs' / 'at' / 'seed0' / 'stdout.txt'}" in err
    assert "CUDA out of memory" in err and _record(tmp_path, "ap")["metrics"]["mAP"] == 17.41
    with pytest.raises(SystemExit, match=r"at seed 0 failed \(exit 3\)"):
        Runner("ablate", "tools/ablate.py").run(jobs)


def test_a_log_without_the_test_set_is_a_failure(tmp_path, trainings):
    job = _job(tmp_path, "at")._replace(test_set="OccludedDuke")
    with pytest.raises(SystemExit, match=f"at seed 0: no evaluation of OccludedDuke in {job.output_dir}/log.txt"):
        Runner("ablate", "tools/ablate.py").run([job])
