"""A checkpoint that cannot be written ends the run on every rank with one clear error, and leaves the previous
checkpoint complete (grpo/checkpoint.py save_checkpoint), on two real gloo ranks.

The failure is real, not raised by hand: rank 1 lowers its file-size limit (RLIMIT_FSIZE) before the second
save, so the operating system refuses its write (EFBIG), as a full disk refuses one (ENOSPC). The engine is a
stand-in that writes one tensor file per rank, as DeepSpeed's engine writes its shard.
"""
from __future__ import annotations

import os
import resource
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

SHARD_ELEMENTS = 100_000  # 400 kB of float32 per rank's shard
LIMIT_BYTES = 50_000  # rank 1's file-size limit during the failing save: below one shard


class ShardWriter:
    """Writes this rank's shard of a tensor, as a training engine's save_state does."""

    def __init__(self, rank: int):
        self.rank = rank

    def save_state(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(torch.full((SHARD_ELEMENTS,), float(self.rank)), folder / f"shard_rank{self.rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, run_dir: str, out) -> None:
    import torch.distributed as dist

    from grpo.checkpoint import save_checkpoint
    from grpo.device import init_host_group
    from grpo.errors import RunFailed

    torch.set_num_threads(1)
    init_host_group(rank, 2, port, timeout_s=60)
    engines = {"policy": ShardWriter(rank)}
    shared = lambda folder: (folder / "config.yaml").write_text("step: saved\n")  # noqa: E731
    try:
        save_checkpoint(run_dir, 1, 2, engines, {"step": 1}, rank, shared)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        if rank == 1:
            resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, hard))
        try:
            save_checkpoint(run_dir, 2, 2, engines, {"step": 2}, rank, shared)
            out.put((rank, "saved"))
        except RunFailed as e:
            out.put((rank, str(e)))
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    os._exit(0)  # skip the interpreter's C++ teardown, which sometimes aborts after the group is gone


def test_a_write_refused_on_one_rank_stops_every_rank_and_keeps_the_previous_checkpoint(tmp_path):
    out = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(_rank, args=(_free_port(), str(tmp_path), out), nprocs=2, start_method="spawn")
    results = dict(out.get() for _ in range(2))
    assert results[0] == results[1], "the ranks ended with different messages"
    message = results[0]
    assert message.startswith("step 2: the checkpoint could not be written under")
    assert "rank 1:" in message and "rank 0:" not in message  # the rank whose write failed, and only it
    assert f"the previous checkpoint {tmp_path / 'checkpoints' / 'step_00000001'} is intact" in message
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_00000001"]  # the half-written step 2 is gone
    for rank in (0, 1):  # step 1's shards load whole
        shard = torch.load(root / "step_00000001" / "policy" / f"shard_rank{rank}.pt", weights_only=True)
        assert shard.shape == (SHARD_ELEMENTS,) and bool((shard == rank).all())
