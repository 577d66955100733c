"""Run tools/train_net.py; every rank saves the weights it holds at the end of each phase (used by
test_multi_machine.py: only rank 0 writes checkpoints, so rank 1's weights are not seen otherwise).

    RANK_WEIGHTS=DIR python tests/faults/rank_weights.py ARGS...

writes ``DIR/stage1_rank<R>.pth`` (when stage 2 begins) and ``DIR/final_rank<R>.pth`` (after
training) from each rank R: ``{"parameters": {name: tensor}, "buffers": {name: tensor}}``. The
hooks are installed inside each rank's process, so they also hold in the processes fastreid's
launcher spawns.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "tools"))
import train_net  # noqa: E402

_train_main = train_net.main


def install() -> None:
    """Wrap the phase switch and the end of training to save this rank's weights."""
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


def main(args):
    """One rank: :func:`train_net.main` with the hooks (a spawned rank finds this by name)."""
    install()
    return _train_main(args)


if __name__ == "__main__":
    train_net.main = main  # what train_net.run launches in every rank
    arguments = train_net.default_argument_parser().parse_args()
    sys.exit(train_net.run(arguments))
