"""Moving between training and generation mode, and pushing trained weights into the rollout engine.

`push_weights` gathers the (possibly ZeRO-3 sharded) parameters in buckets of whole decoder layers,
the same buckets in the same order on every rank (the gather is a collective), and hands each
bucket to the rollout engine with Hugging Face names. Rules learned the hard way (see
shared/notes/colocate-cpu.md): a bucket never splits a decoder layer (vLLM fuses q/k/v and gate/up
per layer, and a split silently corrupts it), a tied weight is gathered once but sent under every
name (`lm_head.weight` too), and the rollout engine gets its own copy of the bytes.

With LoRA (model.lora) the sync sends what sync.lora_mode says: `adapter` gathers only the adapter's
matrices and hands them over as one `grpo.lora.AdapterWeights` (the engine keeps the base weights it
loaded at start-up); `merged` walks the same whole-layer buckets and sends each adapted linear as
W + (alpha/r) B A under its plain Hugging Face name, computed into new tensors, so the trained base
stays as it is.
"""
from __future__ import annotations

import re
from typing import Protocol

import torch

from grpo.lora import AdapterWeights, adapter_weights, is_adapter, merged_state

_LAYER = re.compile(r"^(.*?\blayers\.\d+)\.")


class SyncSource(Protocol):
    def named_parameters_for_sync(self) -> list[tuple[str, torch.nn.Parameter]]: ...
    def gathered(self, params: list[torch.nn.Parameter]): ...
    def release_gathered(self) -> None: ...
    def adapter_config(self) -> dict | None: ...


class SyncTarget(Protocol):
    def load_weights(self, named_tensors) -> None: ...
    def load_adapter(self, adapter: AdapterWeights) -> None: ...
    def wake_weights(self) -> None: ...
    def wake(self) -> None: ...
    def sleep(self) -> None: ...


def layer_key(name: str) -> str:
    """The decoder layer a parameter belongs to ('model.layers.3'), or 'other' for embeddings/norm/head."""
    match = _LAYER.match(name)
    return match.group(1) if match else "other"


def _numel_bytes(param: torch.nn.Parameter) -> int:
    # under ZeRO-3 a parameter's local tensor is a shard; ds_numel is its full size
    numel = getattr(param, "ds_numel", None) or param.numel()
    return numel * param.element_size()


def plan_buckets(named_params: list[tuple[str, torch.nn.Parameter]], bucket_mb: float) -> list[list[tuple[str, torch.nn.Parameter]]]:
    """Group parameters into buckets of whole layers, each at most bucket_mb unless one layer is larger.

    Order follows `named_params` (module order, identical on every rank); the non-layer parameters
    (embeddings, final norm, output head) form one unit of their own, sent last.
    """
    units: dict[str, list[tuple[str, torch.nn.Parameter]]] = {}
    for name, param in named_params:
        units.setdefault(layer_key(name), []).append((name, param))
    ordered = [units[k] for k in units if k != "other"] + ([units["other"]] if "other" in units else [])
    limit = bucket_mb * 2**20
    buckets: list[list[tuple[str, torch.nn.Parameter]]] = []
    size = 0
    for unit in ordered:
        unit_bytes = sum(_numel_bytes(p) for p in {id(p): p for _, p in unit}.values())
        if buckets and size + unit_bytes <= limit:
            buckets[-1].extend(unit)
            size += unit_bytes
        else:
            buckets.append(list(unit))
            size = unit_bytes
    return buckets


@torch.no_grad()
def push_weights(source: SyncSource, target: SyncTarget, bucket_mb: float, lora_mode: str = "adapter") -> dict[str, float]:
    """Copy the trained weights into the rollout engine. Collective: every rank calls it."""
    named = source.named_parameters_for_sync()
    adapter = source.adapter_config()
    if adapter is not None and lora_mode == "adapter":
        return _push_adapter(source, target, named, adapter)
    buckets = plan_buckets(named, bucket_mb)
    sent_bytes = 0
    for bucket in buckets:
        unique = list({id(p): p for _, p in bucket}.values())  # a tied weight is gathered once
        with source.gathered(unique):
            tensors = [(name, param.data) for name, param in bucket]
            if adapter is not None:  # merged: new tensors W + (alpha/r) B A under plain names
                tensors = merged_state(tensors, adapter)
            target.load_weights(tensors)
            # a tied weight (one storage under two names) is counted once
            sent_bytes += sum(t.numel() * t.element_size() for t in {t.data_ptr(): t for _, t in tensors}.values())
    return {"sync/buckets": float(len(buckets)), "sync/megabytes": sent_bytes / 2**20}


def _push_adapter(source: SyncSource, target: SyncTarget, named, config: dict) -> dict[str, float]:
    """LoRA, adapter mode: gather the adapter's matrices (small) in one go and hand them over as one adapter."""
    lora = [(name, param) for name, param in named if is_adapter(name)]
    with source.gathered([param for _, param in lora]):
        adapter = adapter_weights([(name, param.data.clone()) for name, param in lora], config)
    target.load_adapter(adapter)
    sent = sum(t.numel() * t.element_size() for _, t in adapter.tensors)
    return {"sync/buckets": 1.0, "sync/megabytes": sent / 2**20}


def generation_mode(source: SyncSource, target: SyncTarget) -> None:
    """Before generating: free what the trainer's no-grad forwards left gathered, wake the KV cache."""
    source.release_gathered()
    target.wake()


def training_mode(target: SyncTarget) -> None:
    """After generating: let the rollout engine release memory while the trainer works."""
    target.sleep()
