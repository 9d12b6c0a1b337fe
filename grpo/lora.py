"""LoRA conventions shared by the training engine, the weight sync, the rollout engines and export (model.lora).

Adapters are peft's: `add_adapters` wraps a causal LM so that only adapter weights train. Inside the
wrapped model a parameter is named `base_model.model.<hf name>` with `.base_layer` before the weight of
an adapted linear layer and `lora_A.default` / `lora_B.default` for the adapter's matrices. Between
components adapters travel as `AdapterWeights`: peft's saved format (`adapter_config.json` values and
tensors named `base_model.model.<module>.lora_A.weight`, no adapter name), which peft and vLLM both load.
A merged weight is W + (alpha / rank) B A (`merge_linear`), under the plain Hugging Face name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from grpo.config import LoraConfig

PREFIX = "base_model.model."  # what peft puts before every name of the wrapped model
ADAPTER = "default"  # peft's name for the one adapter we train
LORA_MARK = ".lora_"  # in the name of every adapter tensor (lora_A, lora_B)


@dataclass
class AdapterWeights:
    """One adapter as the weight sync hands it to a rollout engine (or export writes it): peft's saved format."""

    config: dict[str, Any]  # adapter_config.json
    tensors: list[tuple[str, torch.Tensor]]  # saved names (base_model.model.<module>.lora_A.weight) -> full tensors

    def save(self, folder: str | Path) -> Path:
        """Write a peft adapter folder (adapter_config.json, adapter_model.safetensors) that peft and vLLM load."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "adapter_config.json").write_text(json.dumps(self.config, indent=1))
        save_file({name: t.detach().contiguous() for name, t in self.tensors}, str(folder / "adapter_model.safetensors"))
        return folder


def peft_config(lora: LoraConfig, base_model: str = ""):
    """peft's LoraConfig for model.lora."""
    from peft import LoraConfig as PeftLoraConfig

    targets = "all-linear" if list(lora.target_modules) == ["all-linear"] else list(lora.target_modules)
    return PeftLoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                          bias="none", task_type="CAUSAL_LM", base_model_name_or_path=base_model or None)


def add_adapters(model, lora: LoraConfig, seed: int, base_model: str = ""):
    """The model with LoRA adapters on its target modules; only the adapters require grad. Seeded, so every rank
    (and every rollout engine) starts from the same adapter."""
    from peft import get_peft_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, peft_config(lora, base_model))


def saved_config(model) -> dict[str, Any]:
    """adapter_config.json of a wrapped model's adapter, JSON-ready (peft keeps sets in it)."""
    config = model.peft_config[ADAPTER].to_dict()
    return {key: sorted(value) if isinstance(value, set) else value for key, value in config.items()}


def is_adapter(name: str) -> bool:
    return LORA_MARK in name


def saved_name(live_name: str) -> str:
    """`...q_proj.lora_A.default.weight` -> `...q_proj.lora_A.weight` (peft's saved format)."""
    return live_name.replace(f".{ADAPTER}.", ".")


def live_name(saved: str) -> str:
    """The inverse of `saved_name`: where a saved adapter tensor lives in a wrapped model."""
    for matrix in ("lora_A", "lora_B"):
        saved = saved.replace(f".{matrix}.", f".{matrix}.{ADAPTER}.")
    return saved


def hf_name(live: str) -> str:
    """The plain Hugging Face name of a wrapped model's base weight (`base_model.model.x.q_proj.base_layer.weight`
    -> `x.q_proj.weight`)."""
    return live.removeprefix(PREFIX).replace(".base_layer.", ".")


def merge_linear(weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float) -> torch.Tensor:
    """W + scaling B A, computed in fp32 and returned in W's dtype (a new tensor; W is not changed)."""
    return (weight.float() + scaling * (lora_b.float() @ lora_a.float())).to(weight.dtype)


def scaling(config: dict[str, Any]) -> float:
    """alpha / rank, the factor of B A (peft's plain LoRA; no rsLoRA)."""
    return float(config["lora_alpha"]) / float(config["r"])


def merged_state(named: list[tuple[str, torch.Tensor]], config: dict[str, Any]) -> list[tuple[str, torch.Tensor]]:
    """A wrapped model's (live name, whole tensor) pairs as plain Hugging Face ones with every adapted linear
    merged, W + (alpha / rank) B A; the adapters themselves are left out. The pairs must hold each adapted
    layer's base weight and both its matrices (the weight sync's buckets are whole decoder layers)."""
    tensors = dict(named)
    scale = scaling(config)
    out = []
    for name, tensor in named:
        if is_adapter(name):
            continue
        module, _, leaf = name.rpartition(".base_layer.")
        if module and leaf == "weight":
            lora_a, lora_b = (tensors[f"{module}.{m}.{ADAPTER}.weight"] for m in ("lora_A", "lora_B"))
            tensor = merge_linear(tensor, lora_a, lora_b, scale)
        out.append((hf_name(name), tensor))
    return out


def adapter_weights(named: list[tuple[str, torch.Tensor]], config: dict[str, Any]) -> AdapterWeights:
    """The adapter tensors among a wrapped model's (live name, whole tensor) pairs, in peft's saved format."""
    return AdapterWeights(config, [(saved_name(name), tensor) for name, tensor in named if is_adapter(name)])
