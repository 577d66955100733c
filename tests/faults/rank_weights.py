"""Run tools/train_net.py; every rank saves the weights it holds at the end of each phase (used by
test_multi_machine.py: only rank 0 writes checkpoints, so rank 1's weights are not seen otherwise).

    RANK_WEIGHTS=DIR python tests/faults/rank_weights.py ARGS...

writes ``DIR/stage1_rank<R>.pth`` (when stage 2 begins) and ``DIR/final_rank<R>.pth`` (after
training) from each rank R: ``{"parameters": {name: tensor}, "buffers": {name: tensor}}``. The
hooks are installed inside each rank's process, so they also hold in the processes fastreid's
launcher spawns.
"""
import functools
import os
import runpy
import sys

from faultkit import REPO

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
_INSTALLED = []


def install() -> None:
    """Wrap the phase switch and the end of training to save this rank's weights (once a process)."""
    if _INSTALLED:
        return
    _INSTALLED.append(True)
    import torch
    from agreid.engine import trainer
    from fastreid.utils import comm

    folder = os.environ["RANK_WEIGHTS"]

    def save(self, tag):
        model = self.unwrapped_model
        state = {"parameters": {name: value.detach().cpu().clone() for name, value in model.named_parameters()},
                 "buffers": {name: value.detach().cpu().clone() for name, value in model.named_buffers()}}
        torch.save(state, os.path.join(folder, f"{tag}_rank{comm.get_rank()}.pth"))

    enter_phase = trainer.AGReIDTrainer.enter_phase

    def enter_phase_after_saving(self, phase, build_data=True):
        if phase == "guide" and build_data and self.phase == "align":
            save(self, "stage1")  # stage 1 is over: the switch hook enters stage 2
        return enter_phase(self, phase, build_data)

    train = trainer.AGReIDTrainer.train

    def train_then_save(self):
        result = train(self)
        save(self, "final")
        return result

    trainer.AGReIDTrainer.enter_phase = enter_phase_after_saving
    trainer.AGReIDTrainer.train = train_then_save


def in_rank(main_func, *args):
    """One rank: the hooks, then train_net's ``main_func(*args)``."""
    install()
    return main_func(*args)


def fastreid_launch_with_hooks(fastreid_launch, main_func, *args, **kwargs):
    """fastreid's launch with each rank starting in :func:`in_rank` (mp.spawn pickles functions by
    module and name: this one is found in the spawned ranks as ``rank_weights.in_rank``)."""
    return fastreid_launch(functools.partial(in_rank, main_func), *args, **kwargs)


if __name__ == "__main__":
    import rank_weights  # this file under its own name (its folder is sys.path[0], also in spawned ranks)
    from agreid.engine import launch

    # A rank torchrun starts runs this script: it trains here. fastreid's launcher spawns its ranks
    # through agreid.engine.launch's fastreid_launch: they install the hooks in in_rank.
    rank_weights.install()
    launching = sys.modules[launch.__module__]  # agreid.engine.launch, the module (its function hides its name)
    launching.fastreid_launch = functools.partial(rank_weights.fastreid_launch_with_hooks, launching.fastreid_launch)
    sys.argv = [TRAIN_NET, *sys.argv[1:]]
    runpy.run_path(TRAIN_NET, run_name="__main__")
