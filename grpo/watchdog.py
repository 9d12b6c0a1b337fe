"""The stall watchdog: when one rank falls behind the others by more than dist.timeout_s, every rank stops
with a message that names the late rank and the phase it is stuck in, instead of waiting forever.

Every rank runs the same phases in the same order (SPMD), so how far a rank has come is one number: the
count of phase boundaries it has crossed (`enter`/`leave`, called by `grpo.metrics.PhaseTimer` and the
trainer). A thread on each rank publishes its position in the launcher's key-value store (the process
group's store) when it changes. Rank 0's thread reads every rank's position once a second and times,
on its own clock (so skewed node clocks do not matter), how long the front-most rank has been waiting
at its position; past the timeout, the ranks still behind are the stalled ones. Rank 0 then prints the
diagnosis, posts it in the store for the other ranks (each exits on reading it) and exits with code 3;
torchrun ends whatever is left. A rank that is behind stops making progress in its phase (a hung reward
worker, a rollout engine that never returns, a sleep): the ranks ahead sit in their next collective.

Not covered by the watchdog, by design: every rank at the same position and none moving (a hang inside
a collective that all of them entered, or simply a long phase). There the process group's own timeout
(`BACKEND_GRACE_S` later) raises in the collective; the trainer then adds the positions it can read to
the error (`describe_positions`).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass

EXIT_STALLED = 3  # the exit code of a run stopped by the watchdog (2 is a user error)
POLL_S = 1.0  # how often positions are published and read
BACKEND_GRACE_S = 30.0  # the collective backend's timeout is dist.timeout_s plus this, so the watchdog speaks first
_KEY = "grpo_watchdog/"


@dataclass
class Position:
    """Where one rank is: the count of phase boundaries it crossed, the phase it is in, the RL step."""

    seq: int
    phase: str
    step: int
    host: str = ""
    pid: int = 0

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: bytes | str) -> "Position":
        return cls(**json.loads(text))


def find_stalled(positions: dict[int, Position], waiting_since: dict[int, float], now: float,
                 timeout_s: float) -> tuple[list[int], float] | None:
    """(the ranks behind, how long the front has waited) when the front-most ranks have waited at their
    position for more than `timeout_s` while others are still behind; None otherwise. `waiting_since[r]`
    is when the observer first saw rank r at its current position (the observer's clock)."""
    front = max(p.seq for p in positions.values())
    behind = sorted(r for r, p in positions.items() if p.seq < front)
    if not behind:
        return None
    waited = now - min(waiting_since[r] for r, p in positions.items() if p.seq == front)
    return (behind, waited) if waited > timeout_s else None


def describe_stall(positions: dict[int, Position], behind: list[int], waited: float, now: float,
                   waiting_since: dict[int, float], timeout_s: float) -> str:
    """The message a stalled run ends with: the late ranks, their phases and for how long, and who waited."""
    lines = [f"stalled: {_ranks(behind)} did not keep up with the others for {waited:.0f} s "
             f"(dist.timeout_s = {timeout_s:g}); the run stops."]
    for r in behind:
        p = positions[r]
        lines.append(f"  rank {r} ({p.host} pid {p.pid}) is stuck in phase '{p.phase}' of step {p.step} "
                     f"(there for {now - waiting_since[r]:.0f} s)")
    ahead = sorted(set(positions) - set(behind))
    phases = sorted({positions[r].phase for r in ahead})
    lines.append(f"  {_ranks(ahead)} waited in phase {', '.join(repr(p) for p in phases)} of step "
                 f"{positions[ahead[0]].step}")
    lines.append("  Look at what that phase runs on the stuck rank (its reward functions, its rollout engine, its "
                 "node); raise dist.timeout_s if the phase is just slow there. The last complete checkpoint is "
                 "untouched; rerunning the same command resumes from it.")
    return "\n".join(lines)


def _ranks(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


class Watchdog:
    """One per rank while a multi-rank run trains (`start`); module functions `enter`/`leave` feed it."""

    def __init__(self, store, rank: int, world_size: int, timeout_s: float):
        self.store, self.rank, self.world_size, self.timeout_s = store, rank, world_size, timeout_s
        self.position = Position(seq=0, phase="start", step=0, host=socket.gethostname(), pid=os.getpid())
        self._published = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="grpo-watchdog", daemon=True)

    def start(self) -> "Watchdog":
        self._publish()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def move(self, phase: str, step: int | None = None) -> None:
        """Called on the main thread at every phase boundary (cheap: the thread publishes)."""
        p = self.position
        self.position = Position(p.seq + 1, phase, p.step if step is None else step, p.host, p.pid)

    # -- the thread ----------------------------------------------------------------------------
    def _publish(self) -> None:
        position = self.position
        if position.seq != self._published:
            self.store.set(f"{_KEY}{self.rank}", position.to_json())
            self._published = position.seq

    def read_positions(self) -> dict[int, Position]:
        keys = [f"{_KEY}{r}" for r in range(self.world_size)]
        return {r: Position.from_json(self.store.get(k)) for r, k in enumerate(keys) if self.store.check([k])}

    def _run(self) -> None:
        seen: dict[int, tuple[int, float]] = {}  # rank -> (position seq, when rank 0 first saw it there)
        while not self._stop.wait(POLL_S):
            try:
                self._publish()
                if self.store.check([_KEY + "abort"]):
                    self._exit(f"rank {self.rank}: stopping: " + self.store.get(_KEY + "abort").decode().splitlines()[0])
                if self.rank != 0:
                    continue
                positions, now = self.read_positions(), time.monotonic()
                for r, p in positions.items():
                    if r not in seen or seen[r][0] != p.seq:
                        seen[r] = (p.seq, now)
                if len(positions) < self.world_size:
                    continue
                since = {r: t for r, (_, t) in seen.items()}
                found = find_stalled(positions, since, now, self.timeout_s)
                if found is not None:
                    message = describe_stall(positions, *found, now, since, self.timeout_s)
                    self.store.set(_KEY + "abort", message)
                    self._exit(message)
            except Exception as e:  # noqa: BLE001  (a store that went away: the launcher is ending the job)
                if self._stop.is_set():
                    return
                print(f"rank {self.rank}: watchdog: cannot reach the store ({e}); it stops watching", file=sys.stderr,
                      flush=True)
                return

    def _exit(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(EXIT_STALLED)  # the main thread may be blocked in C (a collective, a sleep): only this ends it


_active: Watchdog | None = None


def start(rank: int, world_size: int, timeout_s: float) -> Watchdog | None:
    """Start this rank's watchdog (collective: call on every rank after the process group exists); None in a
    single-rank run, where no rank can wait for another."""
    global _active
    import torch.distributed as dist

    stop()
    if world_size < 2:
        return None
    from torch.distributed.distributed_c10d import _get_default_store

    _active = Watchdog(_get_default_store(), rank, world_size, timeout_s).start()
    dist.barrier()  # every rank has published its first position before any rank reads them
    return _active


def stop() -> None:
    global _active
    if _active is not None:
        _active.stop()
        _active = None


def enter(phase: str, step: int | None = None) -> None:
    """The main thread enters `phase` (at RL step `step`, when given)."""
    if _active is not None:
        _active.move(phase, step)


def leave(phase: str) -> None:
    """The main thread leaves `phase`: the next position is 'after PHASE' until the next phase starts."""
    if _active is not None:
        _active.move(f"after {phase}")


def describe_positions() -> str:
    """Every rank's last published position, for an error raised by a collective's own timeout ('' if unknown)."""
    if _active is None:
        return ""
    try:
        positions = _active.read_positions()
    except Exception:  # noqa: BLE001
        return ""
    return "\n".join(f"  rank {r}: phase '{p.phase}' of step {p.step} (phase boundary {p.seq})"
                     for r, p in sorted(positions.items()))
