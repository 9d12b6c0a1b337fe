"""The critic of PPO (algo.advantage=gae): a value model under DeepSpeed ZeRO, trained beside the policy.

It starts from `critic.path` (default: the policy's own starting checkpoint) as a token-classification
model with one output: the decoder's last hidden state through a linear value head, which starts at
zero (the first values are 0, so nothing the head drew at random leaks into the first advantages). It
has its own AdamW (critic.lr, critic.lr_warmup_steps, critic.grad_clip), no rollout engine and no
weight sync. Values of response token t are read at the position that predicts t, the same shift as
the policy's logprobs, through the same forward layouts (padded, or packed per shared prompt).
"""
from __future__ import annotations

import contextlib

import torch

from grpo.config import Config
from grpo.device import DistInfo, torch_dtype
from grpo.train.deepspeed import (OptimizedModel, deepspeed_config, gradient_checkpointing_on, load_pretrained,
                                  sharded_loading)
from grpo.train.packing import FlopModel, forward_layout, layout_values
from grpo.types import MicroBatch


class DeepSpeedCriticEngine(OptimizedModel):
    def __init__(self, cfg: Config, dist: DistInfo):
        from transformers import AutoConfig, AutoModelForTokenClassification

        self.cfg = cfg
        c = cfg.critic
        path = c.path or cfg.model.path
        ds_config = deepspeed_config(cfg, cfg.train.zero_stage, train=True, grad_clip=c.grad_clip)
        # one output; dropout off: values must be the same function of the text in training and in the values phase
        config = load_pretrained(path, None, key="critic.path", model_class=AutoConfig, num_labels=1)
        config.classifier_dropout = 0.0
        with sharded_loading(ds_config):
            model = load_pretrained(path, torch_dtype(cfg.model.dtype), key="critic.path",
                                    model_class=AutoModelForTokenClassification, config=config)
        _zero_value_head(model, cfg.train.zero_stage, dist.rank)
        if gradient_checkpointing_on(cfg.model.gradient_checkpointing, model):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        super().__init__(model, dist, ds_config, c.lr, cfg.train.betas, c.weight_decay, c.lr_warmup_steps)
        self._flops = FlopModel.from_config(model.config) if cfg.train.pack_prompts else None

    def values(self, mb: MicroBatch) -> torch.Tensor:
        """values_BT of the micro-batch's response tokens (fp32), with autograd."""
        self.engine.train()
        return layout_values(self.engine, mb, forward_layout(mb, self._flops, torch_dtype(self.cfg.model.dtype)))

    @torch.no_grad()
    def old_values(self, mb: MicroBatch) -> torch.Tensor:
        """The values before this step's critic updates (what GAE and the value clip start from)."""
        return self.values(mb)


def _zero_value_head(model, zero_stage: int, rank: int) -> None:
    """Set the freshly made value head (`score` in decoder models, `classifier` in encoders) to zero."""
    head = getattr(model, "score", None) or getattr(model, "classifier")
    params = list(head.parameters())
    if zero_stage == 3:
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters(params, modifier_rank=0)  # rank 0 writes, all receive
    else:
        gathered = contextlib.nullcontext()
    with gathered:
        if zero_stage != 3 or rank == 0:
            with torch.no_grad():
                for param in params:
                    param.zero_()
