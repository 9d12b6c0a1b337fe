"""Resumable checkpoints: saved atomically every N steps (keeping the last K), found and loaded on resume,
and exported to a Hugging Face folder.

Layout of LOG_DIR/checkpoints/step_00000040/:
    policy/, critic/           each training engine's own state, in a folder named after it (weights,
                               optimizer and scheduler; for DeepSpeed its shards per rank); critic/ with PPO
    trainer_state_rank{R}.pt   step, data-loader cursor and RNG states of rank R, and the world size
    config.yaml                the resolved config
    hf/                        the model's config.json and the tokenizer (what export needs besides weights);
                               with LoRA also the adapter's adapter_config.json

A save writes into `.tmp_step_...` and is renamed to `step_...` only after every rank has finished,
so a crash mid-save leaves a temporary folder (ignored and removed later) and the previous
checkpoint intact. A write that fails on any rank (disk full, no permission) ends the run on every
rank with one `RunFailed` naming the rank, the error and the intact previous checkpoint. Only folders with the final name count as complete. Engines are reached through
the `grpo.train.TrainEngine` protocol (`save_state` / `load_state`): the critic is one more entry.

A checkpoint resumes on any number of ranks that divides train.prompts_per_step: engines reshard their
own state (weights, optimizer moments and step, scheduler), the step and data cursor are global, and
RNG states are restored only on the world size that saved them (`read_rank_state`).
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from grpo.errors import RunFailed, UserError
from grpo.safe_load import load_weights_only
from grpo.train import TrainEngine

_COMPLETE = re.compile(r"^step_(\d{8})$")
POLICY = "policy"  # the policy engine's folder: every checkpoint has one
CRITIC = "critic"  # the critic's (PPO with algo.advantage=gae)


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _COMPLETE.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_resume(run_dir: str | Path, resume: str) -> Path | None:
    """The checkpoint to start from: None for a fresh start."""
    if resume == "never":
        return None
    if resume == "auto":
        done = complete_checkpoints(run_dir)
        return done[-1] if done else None
    path = Path(resume)
    if not (path / POLICY).is_dir():
        raise UserError(f"checkpoint.resume: {resume!r} is not a checkpoint folder (no {POLICY}/ inside); "
                        "use auto, never, or a LOG_DIR/checkpoints/step_... folder")
    return path


def save_checkpoint(run_dir: str | Path, step: int, keep: int, engines: dict[str, TrainEngine], rank_state: dict,
                    rank: int, write_shared: Callable[[Path], None]) -> Path:
    """Collective: every engine and rank writes its part (`rank_state` into trainer_state_rank{R}.pt), rank 0 adds
    the shared files (`write_shared(folder)`), then renames the folder into place and prunes old checkpoints."""
    root = checkpoint_root(run_dir)
    final, tmp = root / f"step_{step:08d}", root / f".tmp_step_{step:08d}"
    error = None
    if rank == 0:
        error = _attempt(lambda: (shutil.rmtree(tmp, ignore_errors=True), tmp.mkdir(parents=True)))
    _raise_if_any_failed(error, step, tmp, root)

    def write_parts() -> None:
        for name, engine in engines.items():
            engine.save_state(tmp / name)
        torch.save(rank_state, tmp / f"trainer_state_rank{rank}.pt")
        if rank == 0:
            write_shared(tmp)

    _raise_if_any_failed(_attempt(write_parts), step, tmp, root)
    if rank == 0:
        if final.exists():  # the same step saved again after a resume: replace the older copy
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in complete_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def _attempt(write: Callable[[], Any]) -> str | None:
    """Run a write; the error it raised (disk full, no permission), as text, or None. torch.save reports a failed
    write as a RuntimeError ("file write failed"), Python's own files as an OSError."""
    try:
        write()
    except (OSError, RuntimeError) as e:
        return f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
    return None


def _raise_if_any_failed(error: str | None, step: int, tmp: Path, root: Path) -> None:
    """Collective (in place of a barrier): when any rank's write failed, every rank raises the same clear error
    and the half-written folder is removed; the checkpoints already complete are left as they were."""
    errors = [error]
    if dist.is_initialized() and dist.get_world_size() > 1:
        errors = [None] * dist.get_world_size()
        dist.all_gather_object(errors, error)
    failed = {r: e for r, e in enumerate(errors) if e is not None}
    if not failed:
        return
    if not dist.is_initialized() or dist.get_rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    done = complete_checkpoints(root.parent)
    previous = f"the previous checkpoint {done[-1]} is intact" if done else "no earlier checkpoint exists"
    where = "; ".join(f"rank {r}: {e}" for r, e in sorted(failed.items()))
    raise RunFailed(f"step {step}: the checkpoint could not be written under {root} ({where}); {previous}. "
                    "Free disk space or make the folder writable (or move log.dir), then rerun the same command "
                    "to resume from the last complete checkpoint.")


def remove_incomplete(run_dir: str | Path) -> list[Path]:
    """Delete temporary folders left by a save that was interrupted (rank 0, before training starts)."""
    root = checkpoint_root(run_dir)
    stale = [p for p in root.glob(".tmp_step_*")] if root.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def saved_world_size(path: Path) -> int:
    """How many ranks saved the checkpoint (recorded in rank 0's trainer state, which every checkpoint has)."""
    state_file = path / "trainer_state_rank0.pt"
    if not state_file.is_file():
        raise UserError(f"checkpoint {path} has no trainer_state_rank0.pt: it is not a complete grpo checkpoint; "
                        "resume from another LOG_DIR/checkpoints/step_... folder")
    return int(load_weights_only(state_file)["world_size"])


def check_resume_world_size(path: Path, world_size: int, prompts_per_step: int) -> None:
    """Before anything loads: a checkpoint resumes on any number of ranks that splits the global batch
    (train.prompts_per_step, which a resumed run keeps) evenly."""
    saved = saved_world_size(path)
    if saved != world_size and prompts_per_step % world_size:
        divisors = [n for n in range(1, prompts_per_step + 1) if prompts_per_step % n == 0]
        raise UserError(f"checkpoint {path} was saved by {saved} ranks and this run has {world_size}: the resumed run "
                        f"keeps the global batch of train.prompts_per_step={prompts_per_step} prompts, which "
                        f"{world_size} ranks cannot split evenly; resume on a number of ranks that divides it "
                        f"({', '.join(map(str, divisors))})")


def checkpoint_to_resume(run_dir: str | Path, resume: str, world_size: int, prompts_per_step: int) -> Path | None:
    """checkpoint.resume resolved (None: a fresh start) and checked to fit this world size; cheap (no engine),
    so launchers call it before the config's own per-rank checks, whose advice (change the batch) does not
    suit a resumed run."""
    path = resolve_resume(run_dir, resume)
    if path is not None:
        check_resume_world_size(path, world_size, prompts_per_step)
    return path


def read_rank_state(path: Path, rank: int, world_size: int) -> dict[str, Any]:
    """This rank's saved trainer state: step, data cursor, RNG states and the world size that saved it.

    On the world size that saved it, each rank reads its own file. On another one (a resharded resume)
    every rank reads rank 0's: the step and the data cursor are global (one prompt order for all ranks,
    `PromptSampler`), while RNG states belong to ranks that may not exist any more and are dropped
    (`rng` is None; the trainer seeds each rank afresh).
    """
    saved = saved_world_size(path)
    if saved == world_size:
        state_file = path / f"trainer_state_rank{rank}.pt"
        if not state_file.is_file():
            raise UserError(f"checkpoint {path} has no {state_file.name} although rank 0 records {saved} ranks: the "
                            "folder is incomplete; resume from another LOG_DIR/checkpoints/step_... folder")
        return load_weights_only(state_file)
    state = load_weights_only(path / "trainer_state_rank0.pt")
    return {**state, "rng": None}


def load_checkpoint(path: Path, engines: dict[str, TrainEngine], rank: int, world_size: int) -> dict[str, Any]:
    """Restore every engine's state (resharded when another number of ranks saved it); returns this rank's
    saved trainer state (`read_rank_state`)."""
    state = read_rank_state(path, rank, world_size)
    for name, engine in engines.items():
        if not (path / name).is_dir():
            raise UserError(f"checkpoint {path} has no {name}/ folder: it was saved by a run without that engine")
        engine.load_state(path / name)
    return state


def export_checkpoint(path: str | Path, out_dir: str | Path, dtype: str | None = None, merge: bool = False) -> Path:
    """Write a checkpoint's trained policy as a Hugging Face folder (safetensors, config, tokenizer).

    Runs in one process without engines: the training engine's saved state is merged into one fp32
    state dict by `grpo.train.deepspeed.consolidated_state_dict`. A LoRA run (model.lora) is written as
    a peft adapter folder (adapter_config.json, adapter_model.safetensors: peft and vLLM load it on its
    base model), or with `merge` as the whole model with the adapter merged in.
    """
    import yaml
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from grpo.device import torch_dtype
    from grpo.lora import adapter_weights, merged_state
    from grpo.train.deepspeed import consolidated_state_dict

    path, out_dir = Path(path), Path(out_dir)
    if not (path / POLICY).is_dir() or not (path / "hf").is_dir():
        raise UserError(f"{path} is not a grpo checkpoint (expected {POLICY}/ and hf/ inside, as in "
                        "LOG_DIR/checkpoints/step_...)")
    saved = yaml.safe_load((path / "config.yaml").read_text())
    dtype = dtype or saved["model"]["dtype"]
    state = consolidated_state_dict(path / POLICY, saved["train"]["zero_stage"])
    adapter_file = path / "hf" / "adapter_config.json"
    if adapter_file.is_file():
        import json

        config = json.loads(adapter_file.read_text())
        named = [(name, tensor.to(torch_dtype(dtype))) for name, tensor in state.items()]
        if not merge:
            adapter_weights(named, config).save(out_dir)
            AutoTokenizer.from_pretrained(path / "hf").save_pretrained(out_dir)
            return out_dir
        state = dict(merged_state(named, config))
    elif merge:
        raise UserError(f"--merge: checkpoint {path} has no LoRA adapter to merge (model.lora.rank was 0)")
    config = AutoConfig.from_pretrained(path / "hf")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise UserError(f"checkpoint {path} does not match its model config: missing {sorted(set(missing) - tied)}, "
                        f"unexpected {sorted(unexpected)}")
    model.tie_weights()
    model.to(torch_dtype(dtype))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(path / "hf").save_pretrained(out_dir)
    return out_dir
