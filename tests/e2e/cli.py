"""Helpers for end-to-end tests: run the real CLI (torchrun or python) on the tiny model, on CPU."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A user reward plugged in through `reward.functions`: a random tiny model never solves Countdown,
# so every Countdown reward would be 0 and every advantage 0; the share of digits in a completion
# varies from sample to sample, which gives the loop a real learning signal to follow.
DIGIT_REWARD = '''
def digit_share(data_source, response, ground_truth, prompt):
    return sum(ch.isdigit() for ch in response) / max(len(response), 1)
'''


def cli_env(extra_pythonpath: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1",
               PYTHONWARNINGS="ignore::FutureWarning", TOKENIZERS_PARALLELISM="false")
    if extra_pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_pythonpath), env.get("PYTHONPATH", "")])
    return env


def run_cli(args: list[str], env: dict[str, str], torchrun: bool, timeout: int = 600,
            nproc: int = 2) -> subprocess.CompletedProcess:
    """`args` under `torchrun --nproc_per_node nproc` (or plain python, one process), from the repo root."""
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args]
    else:
        cmd = [sys.executable, *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


# The tests run recipes/countdown_tiny.yaml (the demo's recipe) on the random tiny model at the scale
# their expected numbers assume: 8 prompts x n=8 at temperature 1, at most 64 new tokens, micro-batches
# of 16, no eval, and the transformers engine (it starts in a second; the vLLM tests ask for vllm after).
TEST_SCALE = ["rollout.engine=hf", "rollout.temperature=1.0", "rollout.max_new_tokens=64", "train.prompts_per_step=8",
              "train.micro_batch_size=16", "eval.files=[]"]


def tiny_overrides(tiny_dir: Path, run_dir: Path) -> list[str]:
    return [f"model.path={tiny_dir / 'model'}", f"data.train_files=[{tiny_dir / 'countdown_train.parquet'}]",
            f"log.dir={run_dir}", "log.progress=false", *TEST_SCALE]




def lora_overrides(model_dir, train_file, run_dir, engine: str, mode: str) -> list[str]:
    """LoRA rank 8 at the tests' scale, with a learning rate that moves the adapter visibly in a step."""
    return [f"model.path={model_dir}", f"data.train_files=[{train_file}]", f"log.dir={run_dir}", "log.progress=false",
            *TEST_SCALE, f"rollout.engine={engine}", "rollout.kv_cache_mb=64", "model.lora.rank=8",
            "model.lora.alpha=16", f"sync.lora_mode={mode}", "train.lr=1.0e-3",
            "reward.functions=[digit_reward:digit_share]", "checkpoint.every_steps=2", "checkpoint.keep=10"]
