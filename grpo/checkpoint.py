"""Resumable checkpoints: saved atomically every N steps (keeping the last K), found and loaded on resume,
and exported to a Hugging Face folder.

Layout of LOG_DIR/checkpoints/step_00000040/:
    deepspeed/                 the engine's own files (module, optimizer and scheduler state per rank)
    trainer_state_rank{R}.pt   step, data-loader cursor and RNG states of rank R
    config.yaml                the resolved config
    hf/                        the model's config.json and the tokenizer (what export needs besides weights)

A save writes into `.tmp_step_...` and is renamed to `step_...` only after every rank has finished,
so a crash mid-save leaves a temporary folder (ignored and removed later) and the previous
checkpoint intact. Only folders with the final name count as complete.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from grpo.device import rng_state, set_rng_state
from grpo.errors import UserError

_COMPLETE = re.compile(r"^step_(\d{8})$")
DEEPSPEED_TAG = "deepspeed"


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
    if not (path / DEEPSPEED_TAG).is_dir():
        raise UserError(f"checkpoint.resume: {resume!r} is not a checkpoint folder (no {DEEPSPEED_TAG}/ inside); "
                        "use auto, never, or a LOG_DIR/checkpoints/step_... folder")
    return path


def save_checkpoint(trainer, step: int, keep: int) -> Path:
    """Collective: every rank writes its part, then rank 0 renames the folder into place and prunes."""
    root = checkpoint_root(trainer.run_dir)
    final, tmp = root / f"step_{step:08d}", root / f".tmp_step_{step:08d}"
    rank = trainer.dist.rank
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    trainer.train.engine.save_checkpoint(str(tmp), tag=DEEPSPEED_TAG)
    torch.save({"step": step, "sampler": trainer.sampler.state_dict(), "rng": rng_state(),
                "world_size": trainer.dist.world_size}, tmp / f"trainer_state_rank{rank}.pt")
    if rank == 0:
        trainer.cfg.save(tmp / "config.yaml")
        trainer.train.engine.module.config.save_pretrained(tmp / "hf")
        trainer.tokenizer.save_pretrained(tmp / "hf")
    dist.barrier()
    if rank == 0:
        if final.exists():  # the same step saved again after a resume: replace the older copy
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in complete_checkpoints(trainer.run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def remove_incomplete(run_dir: str | Path) -> list[Path]:
    """Delete temporary folders left by a save that was interrupted (rank 0, before training starts)."""
    root = checkpoint_root(run_dir)
    stale = [p for p in root.glob(".tmp_step_*")] if root.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def load_checkpoint(trainer, path: Path) -> int:
    """Restore engine, optimizer, scheduler, data cursor and RNG states; returns the step saved."""
    state_file = path / f"trainer_state_rank{trainer.dist.rank}.pt"
    if not state_file.is_file():
        raise UserError(f"checkpoint {path} has no state for rank {trainer.dist.rank}: it was saved with a "
                        "different number of ranks; resume with the same world size")
    state = torch.load(state_file, weights_only=False)
    if state["world_size"] != trainer.dist.world_size:
        raise UserError(f"checkpoint {path} was saved by {state['world_size']} ranks, this run has "
                        f"{trainer.dist.world_size}; resume with the same world size")
    loaded, _ = trainer.train.engine.load_checkpoint(str(path), tag=DEEPSPEED_TAG, load_optimizer_states=True,
                                                     load_lr_scheduler_states=True)
    if loaded is None:
        raise UserError(f"DeepSpeed could not load the checkpoint in {path / DEEPSPEED_TAG}")
    trainer.sampler.load_state_dict(state["sampler"])
    set_rng_state(state["rng"])
    return int(state["step"])


def export_checkpoint(path: str | Path, out_dir: str | Path, dtype: str | None = None) -> Path:
    """Write a checkpoint's trained policy as a Hugging Face folder (safetensors, config, tokenizer).

    Runs in one process without DeepSpeed engines: ZeRO 1-3 shards are merged into fp32 with
    DeepSpeed's own converter; a stage-0 checkpoint already holds the whole module.
    """
    import yaml
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path, out_dir = Path(path), Path(out_dir)
    if not (path / DEEPSPEED_TAG).is_dir() or not (path / "hf").is_dir():
        raise UserError(f"{path} is not a grpo checkpoint (expected {DEEPSPEED_TAG}/ and hf/ inside, as in "
                        "LOG_DIR/checkpoints/step_...)")
    saved = yaml.safe_load((path / "config.yaml").read_text())
    dtype = dtype or saved["model"]["dtype"]
    if saved["train"]["zero_stage"] == 0:
        state = torch.load(path / DEEPSPEED_TAG / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    else:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(path), tag=DEEPSPEED_TAG)
    config = AutoConfig.from_pretrained(path / "hf")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise UserError(f"checkpoint {path} does not match its model config: missing {sorted(set(missing) - tied)}, "
                        f"unexpected {sorted(unexpected)}")
    model.tie_weights()
    model.to({"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype])
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(path / "hf").save_pretrained(out_dir)
    return out_dir
