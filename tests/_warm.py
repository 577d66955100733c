"""Run this repository's scripts as ``python SCRIPT ARGS`` would, in a process forked from a warm
interpreter (the tests' substitute for a fresh ``subprocess`` where the interpreter start proves nothing).

A fresh ``python tools/train_net.py ...`` spends seconds importing torch, fastreid and open_clip
before it does anything. :func:`run` forks the command's process instead from one server process
(started at the first call, one per test session) that imported those modules once and did nothing
else (no tensor op), so each command still runs in a process of its own: ``__main__`` is the
script (or, with ``module``, ``python -m MODULE``), with ``sys.argv``, ``sys.path[0]``, the
environment and the working directory it would have; its stdout and stderr are its own; it ends as
the interpreter ends (atexit handlers and the whole finalisation); the result is its exit status,
or minus the signal that ended it (SIGKILL: -9). Processes it starts (``--num-gpus 2``'s ranks,
torchrun's workers, ablate.py's training runs) are new interpreters, as they are for the user.

Keep a real subprocess (``subprocess.run([sys.executable, ...])``) for what happens at the
interpreter's start: what a script imports, warnings raised at import, environment variables read
at import (CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS), and for the end-to-end runs of the tools. Where
there is a CUDA device, :func:`run` and :func:`start` are plain subprocesses: a forked process
cannot use CUDA once its parent has initialised it.
"""
import atexit
import functools
import gc
import json
import os
import runpy
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Imported by the server before it forks anything: the tools' own modules (each tool file is a
# thin `from agreid.X import main`), so a command imports nothing heavy itself.
PRELOAD = ["tools/train_net.py", "tools/search.py", "tools/extract_features.py", "tools/export_image_encoder.py",
           "tools/visualize_ranklist.py", "tools/probe_pseudo_labels.py", "tools/probe_attributes.py",
           "tools/ablate.py", "tools/convert_clipreid.py", "tools/gpu_check.py", "tools/pretrain_clip.py",
           "tools/make_synthetic.py", "tools/print_results.py"]
PRELOAD_MODULES = ["torch.distributed.run"]

_SERVER = None


# ------------------------------------------------------------------------------------ the client
def run(script, *args, env=None, cwd=REPO, timeout=600, module=False) -> subprocess.CompletedProcess:
    """``subprocess.run([sys.executable, script, *args], cwd=cwd, env=env, capture_output=True,
    text=True, timeout=timeout)`` (``module``: ``python -m script``), without the interpreter's start-up."""
    return start(script, *args, env=env, cwd=cwd, module=module).wait(timeout)


def start(script, *args, env=None, cwd=REPO, module=False, output=None, new_session=False):
    """The command of :func:`run`, started (``Popen``): a handle with ``pid``, ``returncode``,
    ``poll()``, ``wait(timeout)`` (a CompletedProcess) and ``kill()``. ``output``: a file for its
    stdout and stderr together; ``new_session``: ``start_new_session``."""
    global _SERVER
    args = [str(a) for a in args]
    output = None if output is None else str(output)
    if _has_cuda():
        return _Popen(script, args, env, cwd, module, output, new_session)
    if _SERVER is None or _SERVER.poll() is not None:
        _SERVER = _Server()
    return _SERVER.start(script, args, dict(os.environ if env is None else env), str(cwd), module, output,
                         new_session)


@functools.lru_cache(maxsize=None)
def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class _Popen:
    """:func:`start`'s handle as a plain subprocess."""

    def __init__(self, script, args, env, cwd, module, output, new_session):
        self.args, self.output = [script, *args], output
        command = [sys.executable, *(["-m"] if module else []), script, *args]
        if output is None:
            self.proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True, start_new_session=new_session)
        else:
            with open(output, "w") as log:
                self.proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=new_session)
        self.pid = self.proc.pid

    @property
    def returncode(self):
        return self.proc.returncode

    def poll(self):
        return self.proc.poll()

    def kill(self):
        self.proc.kill()

    def wait(self, timeout=None):
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise subprocess.TimeoutExpired(self.args, timeout, out, err) from None
        if self.output is not None:
            out, err = _read(self.output), ""
        return subprocess.CompletedProcess(self.args, self.proc.returncode, out, err)


class _Command:
    """:func:`start`'s handle of a command forked by the server."""

    def __init__(self, server, ident, args, pid, out, err):
        self.server, self.ident, self.args, self.pid, self.out, self.err = server, ident, args, pid, out, err
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            self.server.pump(time.monotonic())
            self.returncode = self.server.finished.get(self.ident)
        return self.returncode

    def kill(self):
        if self.poll() is None:
            _kill(self.pid)

    def wait(self, timeout=None):
        deadline = time.monotonic() + (600 if timeout is None else timeout)
        try:
            while self.poll() is None and self.server.pump(deadline):
                pass
        except BaseException:  # e.g. pytest-timeout's: end the command; the server may be out of step
            _kill(self.pid)
            self.server.proc.kill()
            raise
        if self.returncode is None:
            _kill(self.pid)
            while self.poll() is None and self.server.pump(time.monotonic() + 60):
                pass
            raise subprocess.TimeoutExpired(self.args, timeout, _read(self.out), _read(self.err))
        return subprocess.CompletedProcess(self.args, self.returncode, _read(self.out),
                                           "" if self.err == self.out else _read(self.err))


class _Server:
    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="warm-python-")
        self.log = os.path.join(self.folder, "server.txt")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)], cwd=REPO,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        self.buffer = b""
        self.count = 0
        self.started, self.finished = {}, {}
        atexit.register(self.close)

    def poll(self):
        return self.proc.poll()

    def pump(self, deadline) -> bool:
        """Read the server's next line (a JSON object) into ``started``/``finished``, waiting until
        ``deadline`` at most; False if none came."""
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            while b"\n" not in self.buffer:
                if not selector.select(max(0.0, deadline - time.monotonic())):
                    return False
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    with open(self.log) as log:
                        raise RuntimeError(f"the warm interpreter ended:\n{log.read()[-3000:]}")
                self.buffer += chunk
        finally:
            selector.close()
        line, self.buffer = self.buffer.split(b"\n", 1)
        reply = json.loads(line)
        if "pid" in reply:
            self.started[reply["id"]] = reply["pid"]
        else:
            self.finished[reply["id"]] = reply["returncode"]
        return True

    def start(self, script, args, env, cwd, module, output, new_session):
        self.count += 1
        ident = self.count
        out = output or os.path.join(self.folder, f"{ident}.stdout")
        err = output or os.path.join(self.folder, f"{ident}.stderr")
        request = {"id": ident, "script": script, "module": module, "args": args, "env": env, "cwd": cwd,
                   "stdout": out, "stderr": err, "new_session": new_session}
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
            deadline = time.monotonic() + 600  # at the first command, after the server's imports
            while ident not in self.started:
                if not self.pump(deadline):
                    raise RuntimeError("the warm interpreter did not start within 600 s")
        except BaseException:
            self.proc.kill()
            raise
        return _Command(self, ident, [script, *args], self.started.pop(ident), out, err)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read(path):
    try:
        with open(path, errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:  # killed before it opened its output
        return ""


# ------------------------------------------------------------------------------------ the server
def _serve():
    """Fork a command for each request line on stdin; reply ``{"id", "pid"}`` at once and
    ``{"id", "returncode"}`` when it ends (commands run side by side). One thread: the forked
    processes inherit no lock held by another."""
    import importlib

    for script in PRELOAD:
        try:
            runpy.run_path(os.path.join(REPO, script), run_name="_warm_preload")  # imports only
        except Exception:  # noqa: BLE001 - the command that needs it fails with the error, in its stderr
            pass
    for name in PRELOAD_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001
            pass
    # What the imports created lives as long as any command: out of the collector's sight (as a
    # pre-fork server does), a command's exit takes a fraction of a second instead of one.
    gc.freeze()
    wake_read, wake_write = os.pipe()  # SIGCHLD wakes the select below
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    pending, running, reading = b"", {}, True

    def reply(message):  # one short write: whole on a pipe
        os.write(1, (json.dumps(message) + "\n").encode())

    while reading or running:
        for key, _ in selector.select():
            if key.fd == wake_read:
                os.read(wake_read, 4096)
                continue
            data = os.read(0, 65536)
            if not data:  # the client closed: end once the commands have
                reading = False
                selector.unregister(0)
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    os.close(wake_read)
                    os.close(wake_write)
                    _command(request)  # never returns
                running[pid] = request["id"]
                reply({"id": request["id"], "pid": pid})
        while running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            reply({"id": running.pop(pid), "returncode": code})


def _command(request):
    """The forked process: become ``python SCRIPT ARGS`` (``python -m MODULE ARGS``), run it, and end
    as the interpreter ends (SystemExit's code, or a traceback and 1; then the interpreter's whole
    finalisation, where a thread left running aborts a process: "terminate called without an
    active exception")."""
    try:
        if request["new_session"]:
            os.setsid()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        stderr = stdout if request["stderr"] == request["stdout"] else \
            os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        stdin = os.open(os.devnull, os.O_RDONLY)
        for fd, handle in ((0, stdin), (1, stdout), (2, stderr)):
            os.dup2(handle, fd)
        for handle in {stdin, stdout, stderr}:
            os.close(handle)
        sys.stdin = open(os.devnull)
        script = request["script"]
        if request["module"]:
            sys.argv = ["-m", *request["args"]]
            sys.path[0] = os.getcwd()
            runpy.run_module(script, run_name="__main__", alter_sys=True)
        else:
            sys.argv = [script, *request["args"]]
            sys.path[0] = os.path.dirname(os.path.abspath(script))
            runpy.run_path(os.path.abspath(script), run_name="__main__")  # __file__ absolute, as python sets it
    except SystemExit:
        raise  # up through _serve: the interpreter exits with its code
    except BaseException:
        sys.excepthook(*sys.exc_info())  # what the interpreter prints for an uncaught exception
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    _serve()
