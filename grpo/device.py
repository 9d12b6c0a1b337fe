"""Device, communication backend and process-group set-up: the only file that names an accelerator.

Everything goes through DeepSpeed's accelerator abstraction, so the same code runs on CUDA (nccl),
Ascend NPU (hccl, after `import torch_npu`) and CPU (gloo). Under torchrun the launcher's
environment is used; in a plain process (a script or a notebook) we set up a world of size 1.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch


# The host: where tensors live before they reach an accelerator, and what runs when there is none.
HOST = torch.device("cpu")
HOST_ACCELERATOR = "cpu"  # DeepSpeed's accelerator name (DS_ACCELERATOR) for running on the host alone
HOST_BACKEND = "gloo"  # the collective backend over host memory

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a model.dtype setting ("bfloat16", "float32")."""
    return DTYPES[name]


def is_host(device: torch.device) -> bool:
    """Whether `device` is host memory (CPU), where some kernels take other paths than on accelerators."""
    return device.type == HOST.type


def init_host_group(rank: int, world_size: int, port: int, timeout_s: float | None = None) -> None:
    """A process group over host memory on this machine, for CPU-side work outside DeepSpeed (the demo's
    base-model build, tests); with `timeout_s` a collective that waits longer raises instead of hanging."""
    import datetime

    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=timeout_s) if timeout_s else None
    dist.init_process_group(HOST_BACKEND, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                            timeout=timeout)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _set_single_process_env() -> None:
    """A plain `python` run has no launcher environment; DeepSpeed needs one, even for world size 1."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))


def accelerator():
    from deepspeed.accelerator import get_accelerator

    return get_accelerator()


def init_distributed(timeout_s: float | None = None) -> DistInfo:
    """Create the world process group (idempotent) and pick this rank's device; with `timeout_s` a collective
    that waits longer raises (gloo) or aborts the process (nccl, hccl) instead of hanging."""
    _set_single_process_env()
    try:  # torch_npu registers the NPU backend; DeepSpeed auto-detects it only once imported
        import torch_npu  # noqa: F401
    except ImportError:
        pass
    import deepspeed
    import torch.distributed as dist

    acc = accelerator()
    if acc.device_name() == HOST_ACCELERATOR:
        # DeepSpeed otherwise JIT-compiles a shared-memory comm op (~40 s) that gloo training does not need.
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if acc.device_name() != HOST_ACCELERATOR:
        acc.set_device(local_rank)
    if not dist.is_initialized():
        import datetime

        timeout = {"timeout": datetime.timedelta(seconds=timeout_s)} if timeout_s else {}
        deepspeed.init_distributed(dist_backend=acc.communication_backend_name(), auto_mpi_discovery=False, **timeout)
    device = torch.device(acc.current_device_name())
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=device)


def is_cpu() -> bool:
    """Whether this process runs on the host alone (DeepSpeed's accelerator is the CPU)."""
    return accelerator().device_name() == HOST_ACCELERATOR


def max_memory_allocated_gb() -> float:
    """Peak device memory of this rank in GiB (0 on CPU, where the allocator does not track it)."""
    if is_cpu():
        return 0.0
    return accelerator().max_memory_allocated() / 2**30


def peak_rss_gb() -> float:
    """Peak resident memory of this process in GiB (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def memory_now_gb() -> float:
    """Memory this rank holds now, in GiB: the accelerator's peak since the last call (then reset), or
    on CPU the process's resident set. Called at the end of each phase to attribute memory to it."""
    if is_cpu():
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**30
    acc = accelerator()
    peak = acc.max_memory_allocated() / 2**30
    acc.reset_peak_memory_stats()
    return peak


def rng_state() -> dict:
    """Every random generator a rank uses, to put in a checkpoint."""
    import random

    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if not is_cpu():
        state["accelerator"] = accelerator().get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    import random

    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "accelerator" in state and not is_cpu():
        accelerator().set_rng_state(state["accelerator"])
