"""Two "machines" on this one host: fastreid's multi-machine flags and torchrun's multi-node flags.

Each machine is its own launcher process with one rank (gloo on the CPU; CUDA is hidden from the
subprocesses) and its own OUTPUT_DIR, as on machines without a shared disk. Both training phases
run; both ranks must end each phase with the same weights, and killing one rank must end the
whole job, both machines, within seconds.

Only rank 0 writes checkpoints: tests/faults/rank_weights.py, the launchers' entry point here, has
every rank save the weights it holds at the end of each phase.
"""
import os
import signal
import socket
import time

import pytest
import torch

import _warm
from faultkit import REPO, tiny_args
from agreid import serialization

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rank_weights.py")
LAUNCHERS = ["fastreid", "torchrun"]
START_TIMEOUT = 240  # s until both ranks train (imports and model building on a busy 2-core host)
RUN_TIMEOUT = 300  # s for a whole tiny run
KILL_TIMEOUT = 15  # s for the job to end after a rank is killed


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _machine_command(launcher, machine_rank, port, args):
    """The command of one machine of a two-machine job, one process per machine:
    ``python SCRIPT ...`` or ``python -m torch.distributed.run ...`` (``(script or module, args, module)``)."""
    if launcher == "fastreid":
        return SCRIPT, ["--num-gpus", "1", "--num-machines", "2", "--machine-rank", str(machine_rank),
                        "--dist-url", f"tcp://127.0.0.1:{port}", *args], False
    return "torch.distributed.run", ["--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(machine_rank),
                                     "--master_addr", "127.0.0.1", "--master_port", str(port), SCRIPT, *args], True


def _children(pid):
    """Process ids whose parent is ``pid`` (from /proc; Linux only)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return sorted(found)


def _alive(pid) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _rank_of(launcher_pid):
    """The training process a machine's launcher started (mp.spawn's child, or torchrun's worker)."""
    for pid in _children(launcher_pid):
        try:
            with open(f"/proc/{pid}/cmdline") as handle:
                cmdline = handle.read()
        except OSError:
            continue
        if "spawn_main" in cmdline or SCRIPT in cmdline:
            return pid
    return None


class TwoMachines:
    """Both machines' launchers, started together; on exit nothing they started is left running."""

    def __init__(self, launcher, tmp_path, dataset_root, *extra):
        self.launcher, self.tmp_path = launcher, tmp_path
        self.weights = tmp_path / "rank_weights"
        self.weights.mkdir()
        self.outs = [tmp_path / f"machine{rank}" for rank in range(2)]
        self.env = dict(os.environ, CUDA_VISIBLE_DEVICES="", RANK_WEIGHTS=str(self.weights), OMP_NUM_THREADS="1")
        port = _free_port()
        self.commands = [_machine_command(launcher, rank, port, tiny_args(dataset_root, self.outs[rank], *extra))
                         for rank in range(2)]
        self.procs, self.ranks = [], {}

    def __enter__(self):
        # Each machine's launcher is forked from a warm interpreter (tests/_warm.py); the rank it
        # starts is a new interpreter, as on a machine.
        for rank, (script, args, module) in enumerate(self.commands):
            self.procs.append(_warm.start(script, *args, cwd=REPO, env=self.env, module=module,
                                          output=self.tmp_path / f"machine{rank}.txt", new_session=True))
        return self

    def output(self, rank) -> str:
        return (self.tmp_path / f"machine{rank}.txt").read_text()

    def find_ranks(self):
        """Record each machine's training process while its launcher runs (torchrun's workers
        run in a session of their own: killing the launcher's group would miss them)."""
        for rank, proc in enumerate(self.procs):
            if rank not in self.ranks and proc.poll() is None:
                pid = _rank_of(proc.pid)
                if pid is not None:
                    self.ranks[rank] = pid

    def wait(self, timeout):
        """Wait until both launchers end; returns their exit statuses."""
        deadline = time.monotonic() + timeout
        while any(proc.poll() is None for proc in self.procs):
            self.find_ranks()
            assert time.monotonic() < deadline, f"the job did not end within {timeout} s:\n{self._tails()}"
            time.sleep(0.2)
        return [proc.returncode for proc in self.procs]

    def _tails(self):
        return "\n".join(f"--- machine {rank}\n{self.output(rank)[-2000:]}" for rank in range(2))

    def __exit__(self, *exc):
        self.find_ranks()
        for pid in self.ranks.values():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        return False


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _different(first, second):
    assert first.keys() == second.keys()
    return [name for name in first if not torch.equal(first[name], second[name])]


pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the ranks' processes in /proc")


@pytest.fixture(scope="module", params=LAUNCHERS)
def two_machine_run(request, tiny_dataset_root, tmp_path_factory):
    """A finished two-machine run (one epoch a phase) and every rank's weights after each phase."""
    launcher = request.param
    with TwoMachines(launcher, tmp_path_factory.mktemp(launcher), tiny_dataset_root,
                     "SEED", "5", "TEST.EVAL_PERIOD", "0") as job:
        start = time.monotonic()
        returncodes = job.wait(RUN_TIMEOUT)
        assert returncodes == [0, 0], job._tails()
    print(f"{launcher}: the two-machine run took {time.monotonic() - start:.1f} s")
    assert "Entering phase 'guide'" in (job.outs[1] / "log.txt.rank1").read_text()
    # Rank 0 wrote the checkpoints; rank 1 only its log, in its own folder.
    assert (job.outs[0] / "model_final.pth").is_file() and not list(job.outs[1].glob("*.pth"))
    weights = {tag: [_weights(job.weights / f"{tag}_rank{rank}.pth") for rank in range(2)]
               for tag in ("stage1", "final")}
    return job, weights


def test_two_machines_train_both_phases_to_the_same_parameters(two_machine_run):
    job, weights = two_machine_run
    for tag, checkpoint in (("stage1", "model_stage1.pth"), ("final", "model_final.pth")):
        ranks = weights[tag]
        different = _different(*(rank["parameters"] for rank in ranks))
        assert not different, f"{tag}: {len(different)} parameters differ between the ranks, e.g. {different[:3]}"
        saved = serialization.load_checkpoint_file(str(job.outs[0] / checkpoint))["model"]
        held = {**ranks[0]["parameters"], **ranks[0]["buffers"]}
        assert set(saved) <= set(held), set(saved) - set(held)
        assert not _different({name: held[name] for name in saved}, saved), f"{checkpoint} is not what rank 0 held"
    stage1, final = weights["stage1"][0]["parameters"], weights["final"][0]["parameters"]
    assert _different(stage1, final), "stage 2 changed no parameters"


def test_two_machines_end_with_the_same_buffers(two_machine_run):
    _, weights = two_machine_run
    for tag in ("stage1", "final"):
        different = _different(*(rank["buffers"] for rank in weights[tag]))
        assert not different, f"{tag}: {len(different)} buffers differ between the ranks: {different}"


@pytest.mark.parametrize("launcher,killed", [("fastreid", 1), ("torchrun", 0)])
def test_killing_one_machines_rank_ends_both_machines_within_seconds(launcher, killed, tiny_dataset_root, tmp_path):
    with TwoMachines(launcher, tmp_path, tiny_dataset_root,
                     "SOLVER.STAGE1.MAX_EPOCH", "200", "SOLVER.MAX_EPOCH", "200") as job:
        logs = [job.outs[0] / "log.txt", job.outs[1] / "log.txt.rank1"]
        deadline = time.monotonic() + START_TIMEOUT
        # Both ranks inside the training loop: each logged its start, and rank 0 the end of an
        # epoch (an "epoch/iter" line), whose steps rank 1 took with it.
        while not (all(log.is_file() and "Starting training" in log.read_text() for log in logs)
                   and "epoch/iter:" in logs[0].read_text()):
            job.find_ranks()
            assert all(proc.poll() is None for proc in job.procs), job._tails()
            assert time.monotonic() < deadline, f"training did not start:\n{job._tails()}"
            time.sleep(0.2)
        job.find_ranks()
        assert sorted(job.ranks) == [0, 1], job.ranks
        os.kill(job.ranks[killed], signal.SIGKILL)
        killed_at = time.monotonic()
        returncodes = job.wait(KILL_TIMEOUT + 45)
        took = time.monotonic() - killed_at
        print(f"{launcher}: both machines ended {took:.1f} s after rank {killed} was killed "
              f"(exit statuses {returncodes})")
        assert all(code != 0 for code in returncodes), returncodes
        assert took < KILL_TIMEOUT, f"the job took {took:.1f} s to end after a rank was killed"
        time.sleep(1)
        assert not any(_alive(pid) for pid in job.ranks.values()), "a rank outlived the job"
