"""Gathering ZeRO-3 parameters through shared memory, when every rank runs on this host in host memory.

The weight sync needs every parameter whole on every rank. DeepSpeed's gather is an all-gather through
the process group; on CPU that is gloo over loopback sockets, and it took 0.36-0.50 s of a 0.46-0.59 s
sync of the 105M model (benchmarks/README.md), six times a plain copy of the same bytes. Ranks on one
host can share the bytes instead: each rank writes its own shard into one shared-memory buffer (half a
copy of the bytes with two ranks), a barrier, and every rank reads the whole parameters from the buffer
as views, with no further copy. The rollout engine then copies them into its own weights, as it would
from DeepSpeed's gathered tensors.

ZeRO-3 keeps parameter p as a flat shard `p.ds_tensor` of `ceil(numel / world)` elements per rank, rank r
holding elements [r x part, (r + 1) x part) of the flattened parameter (the last one padded); laying the
shards end to end in rank order therefore gives the flattened parameter, followed by padding.

The buffer is a file in /dev/shm mapped by every rank and unlinked as soon as all have mapped it, so it
never outlives the processes. It grows (a new file) when a larger bucket comes.
"""
from __future__ import annotations

import contextlib
import socket
import uuid
from pathlib import Path

import torch
import torch.distributed as dist

ALIGN = 64  # bytes: each parameter's region starts on a cache line


def usable(world_size: int) -> bool:
    """Whether every rank of the world runs on this host and /dev/shm exists (collective).

    Asked of the ranks themselves (host name and boot id): launchers' LOCAL_WORLD_SIZE cannot be trusted
    here, as vLLM's CPU platform rewrites it in every process that builds an engine.
    """
    if world_size < 2 or not dist.is_initialized():
        return False
    boot = Path("/proc/sys/kernel/random/boot_id")
    host = (socket.gethostname(), boot.read_text().strip() if boot.exists() else "", Path("/dev/shm").is_dir())
    hosts = [None] * world_size
    dist.all_gather_object(hosts, host)
    return all(h == host for h in hosts) and host[2]


class SharedMemoryGather:
    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size
        self.buffer = torch.empty(0, dtype=torch.uint8)

    def _ensure(self, nbytes: int) -> None:
        """Every rank maps one shared file of at least `nbytes` (collective)."""
        if self.buffer.numel() >= nbytes:
            return
        names = [f"grpo-gather-{uuid.uuid4().hex}" if self.rank == 0 else None]
        dist.broadcast_object_list(names, src=0)
        path = Path("/dev/shm") / names[0]
        if self.rank == 0:
            with open(path, "wb") as f:
                f.truncate(nbytes)
        dist.barrier()
        self.buffer = torch.from_file(str(path), shared=True, size=nbytes, dtype=torch.uint8)
        dist.barrier()
        if self.rank == 0:
            path.unlink()  # the mappings stay valid; nothing is left behind when the processes end

    @contextlib.contextmanager
    def gathered(self, params: list[torch.nn.Parameter]):
        """Context in which `params` (ZeRO-3 partitioned) are whole on every rank, as views of the shared buffer."""
        regions, total = [], 0
        for p in params:
            part = p.ds_tensor.numel()
            nbytes = part * self.world_size * p.ds_tensor.element_size()
            regions.append((total, part))
            total += -(-nbytes // ALIGN) * ALIGN
        self._ensure(total)
        whole = []
        for p, (offset, part) in zip(params, regions):
            dtype = p.ds_tensor.dtype
            size = part * self.world_size * p.ds_tensor.element_size()
            flat = self.buffer[offset:offset + size].view(dtype)
            flat[self.rank * part:(self.rank + 1) * part].copy_(p.ds_tensor.data.view(-1))
            whole.append(flat[:p.ds_numel].view(p.ds_shape))
        dist.barrier()  # every shard is written
        partitioned = [p.data for p in params]
        try:
            for p, full in zip(params, whole):
                p.data = full
            yield
        finally:
            for p, data in zip(params, partitioned):
                p.data = data
            dist.barrier()  # every rank has read the buffer before anyone writes the next bucket into it
