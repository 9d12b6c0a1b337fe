"""grpo: R1-Zero style reinforcement learning for LLMs (GRPO with rule-based rewards).

Public API: `Config`, `load_config`, `Trainer`. Importing the package is cheap: DeepSpeed,
transformers and vLLM load only when a Trainer is built.

    import grpo
    grpo.Trainer(grpo.load_config("recipes/countdown_tiny.yaml", ["train.max_steps=3"])).fit()
"""
from grpo.config import Config
from grpo.recipe import load_config
from grpo.errors import UserError

__all__ = ["Config", "load_config", "Trainer", "UserError"]


def __getattr__(name):
    if name == "Trainer":
        from grpo.trainer import Trainer

        return Trainer
    raise AttributeError(f"module 'grpo' has no attribute {name!r}")
