"""Worker processes that run scoring jobs with a hard per-item timeout and an optional deadline per call.

Why processes and not signals or threads: sympy (or a user's reward function) can hang in C code
(`9**9**9**9`, a huge factorial) where no Python-level timeout fires, and `signal.alarm` only
works on the main thread. A hung worker is killed (SIGKILL) and replaced; its item scores as a
timeout, the rest of its chunk goes back in the queue, and training continues.

Hangs do not queue behind each other. With a fixed set of workers, each hung item would hold one
worker for the whole timeout, so H hanging items cost ceil(H / num_workers) * timeout_s one after
another (55 hangs, 2 workers, 2 s: about a minute) while the healthy items waited behind them. So a
worker whose item has run STUCK_AFTER_S is marked stuck: the rest of its chunk goes back in the
queue and a spare worker starts in its place, up to MAX_STUCK_WORKERS stuck ones at once, each
waiting out its own timeout in parallel and killed then (or reused, if its item does finish).
`map(..., deadline_s=D)` bounds the whole call: at D seconds after the first worker is ready
(starting the pool is bounded by START_TIMEOUT_S), every item not finished scores as a timeout and
every busy worker is killed, all at once; the next call starts their replacements.

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
STUCK_AFTER_S = 0.5  # an item running this long (or half the timeout, if less) marks its worker stuck
MAX_STUCK_WORKERS = 8  # stuck workers waiting out their timeouts beside the num_workers that keep scoring
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
        self.chunk: collections.deque[int] = collections.deque()  # indices sent, in the order results come back
        self.taken_back: set[int] = set()  # indices of the chunk given to other workers when this one got stuck
        self.stuck = False  # its current item ran past STUCK_AFTER_S; a spare works in its place
        self.proc.stdin.write(init)
        self.proc.stdin.flush()

    def send(self, job: str, items: list[tuple[int, Any]]) -> None:
        self.chunk = collections.deque(index for index, _ in items)
        self.taken_back.clear()
        self.stuck = False
        self.started = time.monotonic()
        _write_frame(self.proc.stdin, (job, items))

    def unfinished(self) -> list[int]:
        """Indices of its chunk still this worker's to report (not the ones taken back)."""
        return [index for index in self.chunk if index not in self.taken_back]

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

    def _drop(self, workers: list[_Worker], selector: selectors.BaseSelector, failed: bool = True) -> None:
        """Kill these workers, all at once (SIGKILL to each, then reap): hung or dead ones (`failed`: counted in
        `restarts`, replaced when work needs them), or surplus spares."""
        for worker in workers:
            selector.unregister(worker.fd)
            self._workers.remove(worker)
            try:
                worker.proc.kill()
            except OSError:
                pass
        for worker in workers:
            worker.kill()
        self.restarts += len(workers) if failed else 0

    def close(self) -> None:
        """Stop every worker now (they are restarted if the pool is used again)."""
        _stop_all(self._workers, self._owner)

    def map(self, job: str, payloads: list[Any], timeout_s: float = DEFAULT_TIMEOUT_S,
            deadline_s: float | None = None) -> tuple[list[Outcome], dict[str, int]]:
        """Run the job on every payload, each within timeout_s and all within deadline_s (None: no deadline)."""
        with self._lock:
            if os.getpid() != self._owner:  # forked: start our own workers, leave the parent's
                self._workers = []
                self._owner = os.getpid()
                self._finalizer.detach()
                self._finalizer = weakref.finalize(self, _stop_all, self._workers, self._owner)
            return self._map(job, payloads, timeout_s, deadline_s)

    def _map(self, job: str, payloads: list[Any], timeout_s: float, deadline_s: float | None
             ) -> tuple[list[Outcome], dict[str, int]]:
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
        stuck_after = min(STUCK_AFTER_S, timeout_s / 2)
        call_ends: float | None = None  # now + deadline_s, set once a worker is ready

        def settle(index: int, outcome: Outcome) -> None:
            nonlocal remaining
            outcomes[index] = outcome
            remaining -= 1

        def give_back(worker: _Worker) -> None:  # its unreported items go to the front of the queue
            pending.extendleft(reversed(worker.unfinished()))
            worker.chunk.clear()

        try:
            while remaining:
                now = time.monotonic()
                if deadline_s is not None and call_ends is None and any(w.ready for w in self._workers):
                    call_ends = now + deadline_s
                if call_ends is not None and now >= call_ends:
                    # the deadline: whatever is not scored is a timeout; busy workers are killed together
                    for index, outcome in enumerate(outcomes):
                        if outcome is None:
                            settle(index, Outcome("timeout"))
                    self._drop([w for w in self._workers if w.chunk], selector)
                    break
                for worker in self._workers:  # a stuck worker hands the rest of its chunk to the others
                    if worker.ready and worker.chunk and not worker.stuck and now - worker.started > stuck_after:
                        worker.stuck = True
                        rest = worker.unfinished()[1:]
                        worker.taken_back.update(rest)
                        pending.extendleft(reversed(rest))
                stuck = sum(w.stuck for w in self._workers)
                while (pending and len(self._workers) - stuck < self.num_workers
                       and len(self._workers) < self.num_workers + MAX_STUCK_WORKERS):
                    selector.register(self._start_worker().fd, selectors.EVENT_READ, None)  # a spare
                for worker in list(self._workers):
                    if worker.ready and not worker.chunk and pending:
                        size = max(1, min(MAX_CHUNK, len(pending) // (2 * self.num_workers)))
                        chunk = [pending.popleft() for _ in range(min(size, len(pending)))]
                        try:
                            worker.send(job, [(i, payloads[i]) for i in chunk])
                        except (BrokenPipeError, OSError):  # died while idle: retry its chunk elsewhere
                            pending.extendleft(reversed(chunk))
                            worker.chunk.clear()
                            self._drop([worker], selector)
                deadlines = [w.started + (timeout_s if w.ready else START_TIMEOUT_S)
                             for w in self._workers if w.chunk or not w.ready]
                deadlines += [w.started + stuck_after for w in self._workers if w.chunk and not w.stuck]
                deadlines += [call_ends] if call_ends is not None else []
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
                            if index not in worker.taken_back:
                                settle(index, Outcome("error", f"worker process died (exit {worker.proc.poll()})"))
                            give_back(worker)
                        self._drop([worker], selector)
                        continue
                    for frame in worker.frames(data):
                        if frame[0] == "ready":
                            worker.ready = True
                            failed_starts = 0
                        elif frame[0] == "init_error":
                            raise UserError(f"reward worker setup failed: {frame[1]}")
                        else:
                            _, index, status, value = frame
                            worker.chunk.popleft()  # results come back in the order sent
                            if index not in worker.taken_back:  # a taken-back item is another worker's now
                                settle(index, Outcome(status, value))
                            worker.started = time.monotonic()  # the next item's clock starts now
                            if not worker.chunk:  # done, even with a slow item: an ordinary worker again
                                worker.stuck = False
                                worker.taken_back.clear()
                now = time.monotonic()
                timed_out = []
                for worker in self._workers:
                    if worker.chunk and worker.ready and now - worker.started > timeout_s:
                        index = worker.chunk.popleft()
                        if index not in worker.taken_back:
                            settle(index, Outcome("timeout"))
                        give_back(worker)
                        timed_out.append(worker)
                    elif not worker.ready and now - worker.started > START_TIMEOUT_S:
                        raise RuntimeError(f"a reward worker did not start within {START_TIMEOUT_S:.0f}s")
                self._drop(timed_out, selector)  # several at once; spares start above while items wait
            # Every item is settled. A stuck worker still busy with items taken back from it would report them
            # into the next call, and spares beyond num_workers are surplus now: both go.
            self._drop([w for w in self._workers if w.chunk], selector)
            self._drop(self._workers[self.num_workers:], selector, failed=False)  # the newest spares
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
