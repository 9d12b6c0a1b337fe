"""Worker processes that run scoring jobs with a hard per-item timeout.

Why processes and not signals or threads: sympy (or a user's reward function) can hang in C code
(`9**9**9**9`, a huge factorial) where no Python-level timeout fires, and `signal.alarm` only
works on the main thread. A hung worker is killed (SIGKILL) and replaced; its item scores as a
timeout, the rest of its chunk goes back in the queue, and training continues.

Workers are fresh interpreters started with `subprocess` (`python -c ...`): the equivalent of the
"spawn" start method, so nothing of the parent (a torch process group, CUDA state, threads) is
forked, and unlike multiprocessing's spawn they do not re-import the parent's `__main__` (the
training script). Each worker imports only what its setup function needs. Messages are
length-prefixed pickles over the worker's stdin/stdout; the worker moves its own stdout to
stderr, so a print() in user code cannot corrupt the channel.

The pool starts lazily, is reused across calls, restarts after a fork (a child never touches its
parent's workers), and is shut down at exit. Workers also die with their parent (Linux
PR_SET_PDEATHSIG, plus EOF on stdin), so a killed trainer leaves no orphans behind.
"""
from __future__ import annotations

import collections
import importlib
import os
import pickle
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpo.errors import UserError

DEFAULT_TIMEOUT_S = 5.0
START_TIMEOUT_S = 120.0  # a worker that cannot import its setup in this long is broken
MAX_CHUNK = 32  # items handed to a worker at once (it still reports, and is timed, per item)
_HEADER = struct.Struct("<Q")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding grpo/


@dataclass
class Outcome:
    """What became of one item: status "ok" (value is the job's result), "timeout", "error"
    (value is the error text), or "user_error" (a UserError raised by the job: bad input data)."""

    status: str
    value: Any = None


def _write_frame(stream, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exactly(stream, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


# ------------------------------------------------------------------------------------ the worker


def _die_with_parent() -> None:
    parent = os.getppid()
    try:  # Linux: the kernel kills us when the parent goes, even if we are stuck in C code
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:  # elsewhere (and as a fallback): poll for the parent's death
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:
        os._exit(1)


def worker_main() -> None:
    """Entry point of a worker process: set up, then run jobs until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the trainer; it closes us
    _die_with_parent()
    channel_in = os.fdopen(os.dup(0), "rb")
    channel_out = os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)  # user prints go to stderr, never into the message channel
    header = _read_exactly(channel_in, _HEADER.size)
    if header is None:
        return
    init = pickle.loads(_read_exactly(channel_in, _HEADER.unpack(header)[0]))
    sys.path[:0] = [p for p in init["sys_path"] if p not in sys.path]
    try:
        module_name, _, attr = init["setup"].partition(":")
        jobs = getattr(importlib.import_module(module_name), attr)(**init["setup_args"])
    except UserError as exc:
        _write_frame(channel_out, ("init_error", str(exc)))
        return
    except BaseException as exc:  # report anything, then exit: the parent raises it
        _write_frame(channel_out, ("init_error", f"{type(exc).__name__}: {exc}"))
        return
    _write_frame(channel_out, ("ready",))
    while True:
        header = _read_exactly(channel_in, _HEADER.size)
        if header is None:
            return
        job, items = pickle.loads(_read_exactly(channel_in, _HEADER.unpack(header)[0]))
        fn = jobs[job]
        for index, payload in items:
            try:
                frame = ("result", index, "ok", fn(payload))
            except UserError as exc:
                frame = ("result", index, "user_error", str(exc))
            except Exception as exc:  # any scoring bug costs one item, reported as an error
                frame = ("result", index, "error", f"{type(exc).__name__}: {exc}")
            try:
                _write_frame(channel_out, frame)
            except (pickle.PicklingError, TypeError, AttributeError) as exc:
                _write_frame(channel_out, ("result", index, "error", f"unpicklable result: {exc}"))


# ------------------------------------------------------------------------------------ the parent


class _Worker:
    """One worker process, as the parent sees it."""

    def __init__(self, init: bytes):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [_PACKAGE_ROOT, env.get("PYTHONPATH", "")] if p)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env.setdefault(var, "1")  # scoring is single-threaded; don't oversubscribe the cores
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from grpo.rewards.pool import worker_main; worker_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
        )
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""
        self.ready = False
        self.started = time.monotonic()  # of the process, then of the item being worked on
        self.chunk: collections.deque[int] = collections.deque()
        self.proc.stdin.write(init)
        self.proc.stdin.flush()

    def send(self, job: str, items: list[tuple[int, Any]]) -> None:
        self.chunk = collections.deque(index for index, _ in items)
        self.started = time.monotonic()
        _write_frame(self.proc.stdin, (job, items))

    def frames(self, data: bytes) -> list[Any]:
        self.buffer += data
        out = []
        while len(self.buffer) >= _HEADER.size:
            size = _HEADER.unpack_from(self.buffer)[0]
            if len(self.buffer) < _HEADER.size + size:
                break
            out.append(pickle.loads(self.buffer[_HEADER.size:_HEADER.size + size]))
            self.buffer = self.buffer[_HEADER.size + size:]
        return out

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass



def _stop_all(workers: list[_Worker], owner_pid: int, grace_s: float = 2.0) -> None:
    """Close every worker's stdin (an idle worker exits on EOF), wait briefly, kill the rest."""
    if os.getpid() != owner_pid:  # a forked child must not stop its parent's workers
        return
    for worker in workers:
        try:
            worker.proc.stdin.close()
        except OSError:
            pass
    deadline = time.monotonic() + grace_s
    while workers:
        worker = workers.pop()
        try:
            worker.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        worker.kill()


class WorkerPool:
    """`num_workers` processes, each set up by calling `setup` ("package.module:function") with
    `setup_args`; the function returns {job name: fn(payload) -> picklable value}.

    `map(job, payloads, timeout_s)` runs `jobs[job](payload)` for every payload and returns one
    Outcome per payload, in order, and the count of each status.
    """

    def __init__(self, setup: str, setup_args: dict[str, Any] | None = None, num_workers: int = 2):
        if num_workers < 1:
            raise UserError(f"the reward pool needs at least one worker process, got {num_workers}")
        self.num_workers = num_workers
        self._init = None
        self._setup = {"setup": setup, "setup_args": dict(setup_args or {})}
        self._workers: list[_Worker] = []
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _stop_all, self._workers, self._owner)
        self.restarts = 0

    def _start_worker(self) -> _Worker:
        if self._init is None:  # sys.path as of the first use: user modules added by then import
            message = {**self._setup, "sys_path": [p for p in sys.path if isinstance(p, str)]}
            data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
            self._init = _HEADER.pack(len(data)) + data
        worker = _Worker(self._init)
        self._workers.append(worker)
        return worker

    def _replace(self, worker: _Worker, selector: selectors.BaseSelector) -> None:
        selector.unregister(worker.fd)
        worker.kill()
        self._workers.remove(worker)
        self.restarts += 1
        selector.register(self._start_worker().fd, selectors.EVENT_READ, None)

    def close(self) -> None:
        """Stop every worker now (they are restarted if the pool is used again)."""
        _stop_all(self._workers, self._owner)

    def map(self, job: str, payloads: list[Any], timeout_s: float = DEFAULT_TIMEOUT_S
            ) -> tuple[list[Outcome], dict[str, int]]:
        with self._lock:
            if os.getpid() != self._owner:  # forked: start our own workers, leave the parent's
                self._workers = []
                self._owner = os.getpid()
                self._finalizer.detach()
                self._finalizer = weakref.finalize(self, _stop_all, self._workers, self._owner)
            return self._map(job, payloads, timeout_s)

    def _map(self, job: str, payloads: list[Any], timeout_s: float) -> tuple[list[Outcome], dict[str, int]]:
        outcomes: list[Outcome | None] = [None] * len(payloads)
        pending = collections.deque(range(len(payloads)))
        for worker in [w for w in self._workers if w.proc.poll() is not None]:  # died while idle
            worker.kill()
            self._workers.remove(worker)
        while len(self._workers) < self.num_workers:
            self._start_worker()
        selector = selectors.DefaultSelector()
        for worker in self._workers:
            selector.register(worker.fd, selectors.EVENT_READ, None)
        by_fd = lambda fd: next(w for w in self._workers if w.fd == fd)  # noqa: E731
        remaining = len(payloads)
        failed_starts = 0
        try:
            while remaining:
                now = time.monotonic()
                for worker in list(self._workers):
                    if worker.ready and not worker.chunk and pending:
                        size = max(1, min(MAX_CHUNK, len(pending) // (2 * self.num_workers)))
                        chunk = [pending.popleft() for _ in range(min(size, len(pending)))]
                        try:
                            worker.send(job, [(i, payloads[i]) for i in chunk])
                        except (BrokenPipeError, OSError):  # died while idle: retry its chunk elsewhere
                            pending.extendleft(reversed(chunk))
                            worker.chunk.clear()
                            self._replace(worker, selector)
                deadlines = [w.started + (timeout_s if w.ready else START_TIMEOUT_S)
                             for w in self._workers if w.chunk or not w.ready]
                wait = max(0.0, min(deadlines) - now) if deadlines else None
                for key, _ in selector.select(wait):
                    worker = by_fd(key.fd)
                    data = os.read(worker.fd, 1 << 20)
                    if not data:  # the process died (crash, out of memory, killed)
                        if not worker.ready:
                            failed_starts += 1
                            if failed_starts >= 3:
                                raise RuntimeError("reward worker processes exit while starting; "
                                                   "their error output is above")
                        elif worker.chunk:
                            index = worker.chunk.popleft()
                            outcomes[index] = Outcome("error", f"worker process died (exit {worker.proc.poll()})")
                            remaining -= 1
                            pending.extendleft(reversed(worker.chunk))
                            worker.chunk.clear()
                        self._replace(worker, selector)
                        continue
                    for frame in worker.frames(data):
                        if frame[0] == "ready":
                            worker.ready = True
                            failed_starts = 0
                        elif frame[0] == "init_error":
                            raise UserError(f"reward worker setup failed: {frame[1]}")
                        else:
                            _, index, status, value = frame
                            outcomes[index] = Outcome(status, value)
                            remaining -= 1
                            worker.chunk.popleft()
                            worker.started = time.monotonic()  # the next item's clock starts now
                now = time.monotonic()
                for worker in list(self._workers):
                    if worker.chunk and worker.ready and now - worker.started > timeout_s:
                        outcomes[worker.chunk.popleft()] = Outcome("timeout")
                        remaining -= 1
                        pending.extendleft(reversed(worker.chunk))
                        worker.chunk.clear()
                        self._replace(worker, selector)
                    elif not worker.ready and now - worker.started > START_TIMEOUT_S:
                        raise RuntimeError(f"a reward worker did not start within {START_TIMEOUT_S:.0f}s")
        except BaseException:
            # interrupted (a setup error, Ctrl-C): late results must not leak into the next call,
            # so every worker goes; the next call starts fresh ones
            while self._workers:
                self._workers.pop().kill()
            raise
        finally:
            selector.close()
        counts = collections.Counter(o.status for o in outcomes)
        return outcomes, {status: counts.get(status, 0) for status in ("ok", "timeout", "error", "user_error")}
