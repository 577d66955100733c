"""Run tools/train_net.py and SIGKILL it at a chosen point (used by test_kill.py).

    KILL_POINTS=cache:1,step:3,... KILL_STATE=DIR python tests/faults/killer.py ARGS...

The process kills itself at the first point of ``KILL_POINTS`` that has not fired yet (each
point leaves ``DIR/<point>`` before it fires, so a resumed run goes past it):

- ``cache:N``: after N batches of the stage-1 feature cache;
- ``step:I``: just before global iteration I;
- ``saving:NAME``: in the middle of writing checkpoint NAME (half of its bytes on disk);
- ``saved:NAME``: right after checkpoint NAME and ``last_checkpoint`` are written;
- ``switch``: on entering phase ``guide`` (after ``model_stage1.pth``, before stage 2's first step);
- ``eval``: when the final evaluation starts (after ``model_final.pth``).
"""
import os
import runpy
import signal
import sys

from faultkit import REPO

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
STATE = os.environ["KILL_STATE"]
POINTS = [p for p in os.environ.get("KILL_POINTS", "").split(",") if p]
PENDING = next((p for p in POINTS if not os.path.exists(os.path.join(STATE, p.replace(":", "_")))), None)


def kill(point: str) -> None:
    """Record ``point`` as fired, then SIGKILL this process (no cleanup of any kind runs)."""
    if point != PENDING:
        return
    with open(os.path.join(STATE, point.replace(":", "_")), "w") as handle:
        handle.write(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


def install() -> None:
    """Wrap the functions where the points lie."""
    from agreid import serialization
    from agreid.engine import checkpoint, feature_cache, trainer

    progress = feature_cache.Progress

    def counted_progress(iterable, description):
        for count, item in enumerate(progress(iterable, description), start=1):
            yield item
            kill(f"cache:{count}")

    feature_cache.Progress = counted_progress

    run_step = trainer.AGReIDTrainer.run_step

    def killed_run_step(self):
        kill(f"step:{self.iter}")
        return run_step(self)

    trainer.AGReIDTrainer.run_step = killed_run_step

    enter_phase = trainer.AGReIDTrainer.enter_phase

    def killed_enter_phase(self, phase, build_data=True):
        if phase == "guide" and build_data:
            kill("switch")
        return enter_phase(self, phase, build_data)

    trainer.AGReIDTrainer.enter_phase = killed_enter_phase

    save = checkpoint.AtomicCheckpointer.save

    def killed_save(self, name, **kwargs):
        result = save(self, name, **kwargs)
        kill(f"saved:{name}")
        return result

    checkpoint.AtomicCheckpointer.save = killed_save

    open_for_writing = serialization._open_for_writing

    class HalfWritten:
        """A file object that dies after half of what it is given (the name of a save)."""

        def __init__(self, handle, name):
            self.handle, self.name, self.point = handle, name, f"saving:{name}"

        def write(self, data):
            if self.point == PENDING and len(data) > 1:
                self.handle.write(data[:len(data) // 2])
                self.handle.flush()
                kill(self.point)
            return self.handle.write(data)

        def __getattr__(self, attribute):
            return getattr(self.handle, attribute)

        def __enter__(self):
            self.handle.__enter__()
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

    def killed_open(path):
        handle = open_for_writing(path)
        name = os.path.basename(path).split(".pth")[0]
        return HalfWritten(handle, name) if PENDING == f"saving:{name}" else handle

    serialization._open_for_writing = killed_open

    evaluate = trainer.AGReIDTrainer.test

    def killed_test(cls, cfg, model, *args, **kwargs):
        kill("eval")
        return evaluate.__func__(cls, cfg, model, *args, **kwargs)

    trainer.AGReIDTrainer.test = classmethod(killed_test)


if __name__ == "__main__":
    install()
    sys.argv = [TRAIN_NET, *sys.argv[1:]]
    runpy.run_path(TRAIN_NET, run_name="__main__")
