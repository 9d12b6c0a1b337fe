"""The stall watchdog's decision and message (grpo/watchdog.py), and its thread on a real key-value store.

The end-to-end test (a rank that sleeps inside a phase under torchrun) is tests/e2e/test_fail_loudly.py.
"""
from __future__ import annotations

import datetime
import socket
import threading

import pytest

from grpo import watchdog
from grpo.watchdog import Position, describe_stall, find_stalled


def positions(*seq_phase):
    return {r: Position(seq=s, phase=p, step=2, host="node0", pid=100 + r) for r, (s, p) in enumerate(seq_phase)}


def test_a_rank_behind_for_longer_than_the_timeout_is_named():
    # rank 1 is still scoring (boundary 7); ranks 0 and 2 reached boundary 9 (logprobs) at t=100 and wait.
    where = positions((9, "logprobs"), (7, "score"), (9, "logprobs"))
    since = {0: 100.0, 1: 95.0, 2: 101.0}
    assert find_stalled(where, since, now=130.0, timeout_s=60) is None  # the front waited 130 - 100 = 30 s
    behind, waited = find_stalled(where, since, now=161.0, timeout_s=60)  # 161 - 100 = 61 s > 60
    assert behind == [1] and waited == pytest.approx(61.0)
    message = describe_stall(where, behind, waited, 161.0, since, 60)
    assert "rank 1 (node0 pid 101) is stuck in phase 'score' of step 2 (there for 66 s)" in message  # 161 - 95
    assert "ranks 0, 2 waited in phase 'logprobs'" in message and "dist.timeout_s = 60" in message


def test_ranks_at_the_same_place_are_never_called_stalled():
    # a long phase on every rank (or a hang inside a collective all of them entered) is the backend timeout's job
    where = positions((5, "generate"), (5, "generate"))
    assert find_stalled(where, {0: 0.0, 1: 0.0}, now=10_000.0, timeout_s=60) is None


def test_several_ranks_behind_are_all_named():
    where = positions((12, "train"), (10, "generate"), (11, "after generate"), (12, "train"))
    behind, _ = find_stalled(where, {0: 0.0, 1: 0.0, 2: 0.0, 3: 5.0}, now=100.0, timeout_s=60)
    assert behind == [1, 2]


def test_the_thread_on_rank_0_stops_the_process_when_a_rank_falls_behind(monkeypatch):
    """Two watchdogs (ranks 0 and 1) on one real TCPStore; rank 1 never moves, rank 0 moves on and waits."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = dist.TCPStore("127.0.0.1", port, 1, is_master=True, timeout=datetime.timedelta(seconds=10))
    exits = []
    done = threading.Event()

    def record_exit(self, message):
        exits.append((self.rank, message))
        self._stop.set()  # ends the watchdog thread, as os._exit would end the process
        done.set()

    monkeypatch.setattr(watchdog.Watchdog, "_exit", record_exit)
    monkeypatch.setattr(watchdog, "POLL_S", 0.1)
    rank0 = watchdog.Watchdog(store, 0, 2, timeout_s=0.5).start()
    rank1 = watchdog.Watchdog(store, 1, 2, timeout_s=0.5).start()
    rank1.move("score", step=2)  # boundary 1, then nothing more
    rank0.move("score", step=2)
    rank0.move("after score")
    rank0.move("logprobs")  # boundary 3: ahead of rank 1
    assert done.wait(10), "rank 0's watchdog did not fire"
    rank0.stop()
    rank1.stop()
    rank, message = exits[0]
    assert rank == 0 and "rank 1" in message and "phase 'score' of step 2" in message
    assert "waited in phase 'logprobs'" in message
    assert store.get("grpo_watchdog/abort").decode() == message  # what the other ranks read before they exit
