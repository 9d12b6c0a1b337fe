"""The one typed configuration tree of a run and its derived numbers.

A recipe YAML mirrors the dataclasses below and only states what differs from the defaults, which
are a sensible R1-Zero setting (GRPO, n=8, lr 1e-6, k3 KL 0.001, ZeRO-3, bf16); grpo/recipe.py reads
recipes and `section.key=value` overrides into it, rejecting unknown keys and wrong types with a
`ConfigError` (a `UserError`: exit code 2) that names the key, the file and the nearest valid key.
Every field has a one-line doc: the string under it (`grpo.recipe.field_docs` reads them).

`finalize(world_size)` computes the per-rank numbers once and checks that they divide evenly.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from grpo.errors import UserError


class ConfigError(UserError):
    """A recipe or override the config tree cannot accept."""


# Choices a recipe names, each a key of its registry (grpo/algorithms, grpo/rollout; tests/unit/test_config.py
# checks they match), so a typo fails in load_config with the nearest valid name.
# advantage estimator -> the fewest completions per prompt it works with (group statistics need two)
# (gae, PPO's estimator, works per token with a critic: grpo/algorithms/gae.py, not the per-completion registry)
ADVANTAGE_GROUP_SIZES = {"grpo": 2, "dr_grpo": 2, "rloo": 2, "reinforce_pp": 1, "reinforce_pp_baseline": 2, "gae": 1}
AdvantageName = Literal["grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline", "gae"]
PolicyLossName = Literal["ppo_clip", "gspo"]
LossAggregationName = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"]
KLEstimatorName = Literal["k1", "k2", "k3"]
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM 0.32 builds LoRA kernels for


@dataclass
class LoraConfig:
    rank: int = 0
    """LoRA rank; 0 trains every weight (no adapters). vLLM takes 1, 8, 16, 32, 64, 128, 256, 320 or 512."""
    alpha: float = 16.0
    """LoRA alpha: the adapter's update is scaled by alpha / rank."""
    dropout: float = 0.0
    """Dropout on the adapter's input in training (0 keeps the trainer's logprobs equal to the sampler's)."""
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Modules that get adapters: all-linear (every linear layer of the decoder, not the output head) or module names such as q_proj."""


@dataclass
class ModelConfig:
    path: str = "Qwen/Qwen2.5-7B"
    """Hugging Face hub id or local folder of the base model (weights + tokenizer)."""
    dtype: Literal["bfloat16", "float32"] = "bfloat16"
    """Training and rollout precision; bfloat16 trains with fp32 master weights in the optimizer."""
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    """Recompute activations in backward (less memory, about a third more compute); auto: on for models of 1B parameters or more."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapters (model.lora.rank > 0): only they train, the reference is the policy with them disabled."""


@dataclass
class DataConfig:
    train_files: list[str] = field(default_factory=list)
    """Prompt files (parquet/jsonl/json/csv) with TinyZero/verl columns: prompt, data_source, reward_model.ground_truth."""
    template: str = "qwen_r1"
    """Prompt template: qwen_r1, base_r1, raw (prompt used as is), chat (tokenizer's chat template)."""
    templates_file: str = ""
    """Optional JSON file of extra templates, name -> text with a {question} placeholder."""
    max_prompt_length: int = 512
    """Prompts longer than this many tokens are dropped when the data is loaded (the count is printed)."""
    shuffle: bool = True
    """Reshuffle the prompts every epoch (seeded with train.seed + epoch)."""
    skip_malformed: bool = False
    """Skip rows missing a field or with an unrenderable prompt (counted in the log) instead of stopping with an error."""


@dataclass
class RolloutConfig:
    engine: Literal["hf", "vllm"] = "hf"
    """Generation engine: hf (transformers with our batched sampler) or vllm (colocated vLLM, needs the [cpu] or [vllm] extra)."""
    n: int = 8
    """Completions sampled per prompt (the GRPO group size)."""
    temperature: float = 1.0
    """Sampling temperature; the trainer computes logprobs at the same temperature."""
    top_p: float = 1.0
    """Nucleus sampling threshold; 1.0 is off."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 is off."""
    max_new_tokens: int = 1024
    """Maximum response length in tokens; longer responses are cut and counted as clipped."""
    stop: list[str] = field(default_factory=list)
    """Strings that end a completion (besides EOS), e.g. ["</answer>"]; the stop string is kept."""
    batch_size: int = 256
    """hf engine: most sequences one generate call decodes at once (bounds the KV cache memory)."""
    tensor_parallel_size: int = 1
    """vllm engine: ranks per vLLM tensor-parallel group (contiguous ranks; they generate together)."""
    gpu_memory_utilization: float = 0.5
    """vllm engine: fraction of accelerator memory vLLM may take for weights and KV cache (ignored on CPU)."""
    kv_cache_mb: int = 0
    """vllm engine: KV cache size in MiB, overriding gpu_memory_utilization; needed on CPU (0 there means 256)."""
    max_num_batched_tokens: int = 0
    """vllm engine: most tokens per scheduler step; 0 keeps vLLM's default."""
    enforce_eager: bool = False
    """vllm engine: no CUDA graphs or torch.compile (always eager on CPU, where compiling is slower)."""
    load_format: Literal["auto", "dummy"] = "auto"
    """vllm engine: "dummy" skips reading weights from disk; the first weight sync fills them."""
    sleep: bool = True
    """vllm engine: free weights and KV cache while training, on accelerators with vLLM sleep mode (not CPU)."""
    cpu_linear: Literal["plain", "onednn"] = "plain"
    """vllm engine on CPU: "plain" keeps linear weights as parameters (torch's linear; a sync copies into them,
    1.7x a plain copy for a 105M model), "onednn" uses vLLM-CPU's prepacked oneDNN weights (decodes ~6% faster
    there, but every sync rebuilds and repacks each layer: 4.0x a copy); see benchmarks/README.md."""


@dataclass
class TrainConfig:
    max_steps: int = 1000
    """Number of RL steps (one rollout + one optimizer step each)."""
    prompts_per_step: int = 64
    """Prompts per step over all ranks; each yields rollout.n completions."""
    micro_batch_size: int = 4
    """Sequences per forward/backward on one rank; gradients accumulate over the rest of the step."""
    micro_batch_tokens: int = 0
    """When > 0, micro-batches are cut by tokens: consecutive sequences while their size stays within this (row-packed: real tokens, each prompt once; else rows x padded length), at most train.micro_batch_size rows; needs algo.mini_batches 1."""
    lr: float = 1.0e-6
    """Peak learning rate of AdamW."""
    warmup_steps: int = 0
    """Linear warmup from 0 to lr over this many optimizer steps (algo.ppo_epochs x algo.mini_batches per RL step)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    zero_stage: int = 3
    """DeepSpeed ZeRO stage 0-3 for the policy and the reference model."""
    pack_prompts: bool = True
    """Training forwards pack a micro-batch's real tokens into one row, each distinct prompt once, no padding (models with global sdpa/eager attention); else each distinct prompt once per row when that saves FLOPs."""
    seed: int = 42
    """Seed of data order, sampling and initialisation."""
    max_skipped_steps: int = 3
    """An optimizer update whose gradient norm is NaN or inf is skipped on every rank (train/skipped_steps); this many in a row stop the run."""


@dataclass
class AlgoConfig:
    advantage: AdvantageName = "grpo"
    """Advantage estimator: grpo (group mean/std), dr_grpo (group mean), rloo (leave-one-out), reinforce_pp, reinforce_pp_baseline, gae (PPO with a critic: see the critic section)."""
    policy_loss: PolicyLossName = "ppo_clip"
    """Policy loss: ppo_clip (token ratio) or gspo (sequence ratio; use clip ranges around 3e-4/4e-4)."""
    loss_agg: LossAggregationName = "token_mean"
    """Loss aggregation over the optimizer step: token_mean, seq_mean_token_mean, seq_mean_token_sum_norm (Dr. GRPO)."""
    clip_low: float = 0.2
    """Lower clip range: ratio is clipped at 1 - clip_low."""
    clip_high: float = 0.2
    """Upper clip range: ratio is clipped at 1 + clip_high (DAPO clip-higher uses 0.28)."""
    dual_clip: float = 0.0
    """Dual-clip constant c > 1 caps the loss of negative-advantage tokens at -A*c; 0 is off (verl uses 3)."""
    kl_coef: float = 0.001
    """Weight of the KL penalty to the frozen reference model; 0 loads no reference."""
    kl_estimator: KLEstimatorName = "k3"
    """KL estimator per token: k1, k2 or k3 (Schulman's unbiased, non-negative estimator)."""
    kl_in: Literal["loss", "reward"] = "loss"
    """Where the KL penalty goes: loss (GRPO) or reward (subtracted from each completion's reward, REINFORCE++)."""
    entropy_coef: float = 0.0
    """Entropy bonus: subtracts entropy_coef x mean token entropy from the loss."""
    adv_eps: float = 1.0e-6
    """Added to the std before dividing, so a group with equal rewards gives zero advantage."""
    ppo_epochs: int = 1
    """Passes over each rollout (mu); above 1 the trainer recomputes old logprobs before the first update."""
    mini_batches: int = 1
    """Optimizer steps per pass over a rollout; the step's samples are split into this many mini-batches."""
    dynamic_sampling: bool = False
    """DAPO: drop groups whose rewards are all equal and sample more prompts until the batch is full."""
    dynamic_sampling_max_tries: int = 3
    """Most generation rounds per step with dynamic sampling; then the batch is filled with dropped groups."""
    overlong_buffer: int = 0
    """DAPO overlong shaping: reward falls linearly to -overlong_penalty over the last this many tokens; 0 is off."""
    overlong_penalty: float = 1.0
    """Largest overlong penalty, reached at rollout.max_new_tokens."""
    mask_truncated: bool = False
    """Leave completions cut at rollout.max_new_tokens out of the loss (DAPO's overlong filtering)."""
    importance_cap: float = 0.0
    """Truncated importance weights min(pi_trainer / pi_sampler, cap) on the policy loss; 0 is off (2 is common)."""
    importance_level: Literal["token", "sequence"] = "token"
    """Importance weights per token or per whole sequence."""
    gamma: float = 1.0
    """gae: discount per token (verl and TinyZero use 1)."""
    gae_lambda: float = 1.0
    """gae: lambda of the advantages and returns (1: A_t = reward-to-go - V_t)."""
    lambda_policy: Literal["fixed", "adaptive"] = "fixed"
    """gae: fixed uses gae_lambda for the policy's advantages; adaptive (VAPO) uses 1 - 1/(lambda_alpha x length) per sequence, and lambda 1 for the returns."""
    lambda_alpha: float = 0.05
    """gae with lambda_policy=adaptive: VAPO's alpha."""


@dataclass
class CriticConfig:
    path: str = ""
    """algo.advantage=gae: model the value model starts from (hub id or folder, a value head is added); empty: model.path."""
    lr: float = 1.0e-5
    """Peak learning rate of the critic's AdamW."""
    lr_warmup_steps: int = 0
    """Linear warm-up of the critic's learning rate over this many of its optimizer steps."""
    weight_decay: float = 0.0
    """The critic's AdamW weight decay."""
    grad_clip: float = 1.0
    """Clip the critic's global gradient norm to this value; 0 disables clipping."""
    clip: float = 0.5
    """Value clip: in the loss a new value moves at most this far from the value before the step's updates."""
    warmup_steps: int = 0
    """RL steps at the start that train only the critic; the policy is updated from the next step on."""


@dataclass
class RewardConfig:
    functions: list[str] = field(default_factory=list)
    """User reward functions as package.module:function; empty routes by each row's data_source."""
    format_weight: float = 0.0
    """Math and gsm8k score = accuracy + this times the format check (countdown, multiply keep TinyZero's 0.1)."""
    format_mode: Literal["strict", "loose", "think_answer"] = "strict"
    """Format check: strict (think block, then an answer block holding a boxed answer), loose, or think_answer."""
    timeout_s: float = 5.0
    """Hard limit in seconds on scoring one completion; a timeout scores 0 and is counted as reward/timeouts."""
    num_workers: int = 2
    """Worker processes per rank that score completions (each call runs in one, under timeout_s)."""
    step_timeout_s: float = 60.0
    """Deadline in seconds for scoring a whole step; completions not scored by then score 0 and count as reward/timeouts (0: none)."""


@dataclass
class SyncConfig:
    bucket_mb: int = 512
    """Most megabytes of gathered parameters handed to the rollout engine per load (whole layers)."""
    lora_mode: Literal["adapter", "merged"] = "adapter"
    """With LoRA: adapter sends only the adapter (the engine keeps the base weights); merged sends W + (alpha/r) B A per layer bucket."""


@dataclass
class DistConfig:
    timeout_s: float = 1800.0
    """Longest one rank may fall behind the others (a hung reward worker, rollout engine or node): then the run stops, naming that rank and its phase."""


@dataclass
class LogConfig:
    dir: str = "runs/default"
    """Run directory: resolved config, metrics.jsonl, samples.jsonl, TensorBoard events, final model."""
    samples_every: int = 10
    """Write a few sample completions every this many steps (0: never)."""
    num_samples: int = 2
    """How many sample completions to write each time."""
    tensorboard: bool = True
    """Write TensorBoard event files to the run directory."""
    progress: bool = True
    """Show a progress bar on rank 0."""


@dataclass
class CheckpointConfig:
    every_steps: int = 50
    """Save a resumable checkpoint every this many steps to LOG_DIR/checkpoints (0: never)."""
    keep: int = 2
    """How many of the newest checkpoints to keep; older ones are deleted after a save succeeds."""
    resume: str = "auto"
    """auto: continue from the newest complete checkpoint in LOG_DIR if there is one; never; or a checkpoint path."""
    save_final: bool = True
    """At the end of the run, write the trained policy as a Hugging Face folder to LOG_DIR/final."""


@dataclass
class EvalConfig:
    files: list[str] = field(default_factory=list)
    """Prepared benchmark files (verl columns), each a path (named by its file stem) or name=path; empty: no eval."""
    every_steps: int = 0
    """Evaluate every this many RL steps while training; 0 never (eval.at_start and eval.at_end still apply)."""
    k: int = 4
    """Sampled completions per prompt for avg@k, maj@k and pass@k, besides one greedy one for pass@1; 0: greedy only."""
    temperature: float = 1.0
    """Sampling temperature of the k samples (greedy pass@1 does not use it)."""
    max_new_tokens: int = 0
    """Longest evaluated response in tokens; 0 uses rollout.max_new_tokens (the vllm engine cannot go above that)."""
    max_prompts: int = 0
    """Evaluate only the first N prompts of each benchmark (quick periodic evals); 0 uses them all."""
    at_start: bool = False
    """Also evaluate before the first step, as the baseline of a before/after comparison."""
    at_end: bool = True
    """Evaluate after the last step (when eval.files is not empty)."""
    save_completions: bool = False
    """Also write every evaluated completion (greedy and sampled, with its verdict) to LOG_DIR/eval_completions.jsonl."""


@dataclass
class Derived:
    """Numbers computed from the config and the world size by finalize(); not set by recipes."""

    world_size: int = 1
    prompts_per_rank: int = 0
    samples_per_rank: int = 0
    micro_batches_per_update: int = 0  # gradient accumulation steps of one optimizer step
    optimizer_steps_per_step: int = 0  # algo.ppo_epochs x algo.mini_batches


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    derived: Derived = field(default_factory=Derived)
    source: str = "<defaults>"
    """Where the config came from (recipe path), for error messages."""

    def finalize(self, world_size: int) -> "Config":
        """Compute per-rank numbers once and check that everything divides evenly."""
        t, r = self.train, self.rollout
        _require(world_size >= 1, "world_size", f"must be at least 1, got {world_size}", self.source)
        for key, value in [("train.prompts_per_step", t.prompts_per_step), ("rollout.n", r.n),
                           ("train.micro_batch_size", t.micro_batch_size), ("train.max_steps", t.max_steps),
                           ("rollout.max_new_tokens", r.max_new_tokens), ("data.max_prompt_length", self.data.max_prompt_length),
                           ("rollout.batch_size", r.batch_size), ("sync.bucket_mb", self.sync.bucket_mb)]:
            _require(value >= 1, key, f"must be at least 1, got {value}", self.source)
        _require(r.temperature > 0, "rollout.temperature", f"must be > 0, got {r.temperature}", self.source)
        _require(0 < r.top_p <= 1, "rollout.top_p", f"must be in (0, 1], got {r.top_p}", self.source)
        _require(r.top_k >= 0, "rollout.top_k", f"must be >= 0 (0 is off), got {r.top_k}", self.source)
        _require(r.tensor_parallel_size >= 1 and world_size % r.tensor_parallel_size == 0, "rollout.tensor_parallel_size",
                 f"= {r.tensor_parallel_size} must divide the {world_size} ranks into whole groups", self.source)
        _require(0 < r.gpu_memory_utilization <= 1, "rollout.gpu_memory_utilization",
                 f"must be in (0, 1], got {r.gpu_memory_utilization}", self.source)
        _require(t.zero_stage in (0, 1, 2, 3), "train.zero_stage", f"must be 0, 1, 2 or 3, got {t.zero_stage}", self.source)
        _require(t.max_skipped_steps >= 1, "train.max_skipped_steps", f"must be at least 1, got {t.max_skipped_steps}",
                 self.source)
        _require(self.dist.timeout_s > 0, "dist.timeout_s", f"must be > 0 seconds, got {self.dist.timeout_s}", self.source)
        _require(len(t.betas) == 2, "train.betas", f"needs two numbers, got {t.betas}", self.source)
        _require(self.checkpoint.every_steps >= 0, "checkpoint.every_steps",
                 f"must be >= 0 (0 is never), got {self.checkpoint.every_steps}", self.source)
        _require(self.checkpoint.keep >= 1, "checkpoint.keep", f"must be at least 1, got {self.checkpoint.keep}",
                 self.source)
        _require(self.algo.kl_coef >= 0, "algo.kl_coef", f"must be >= 0, got {self.algo.kl_coef}", self.source)
        least = ADVANTAGE_GROUP_SIZES[self.algo.advantage]
        _require(r.n >= least, "rollout.n", f"= {r.n}: algo.advantage={self.algo.advantage} compares the completions "
                 f"of a prompt with each other, so it needs n >= {least}", self.source)
        _require(bool(self.data.train_files), "data.train_files",
                 "is empty: give at least one prompt file, e.g. data.train_files=[path/to/train.parquet]", self.source)
        _require(t.prompts_per_step % world_size == 0, "train.prompts_per_step",
                 f"= {t.prompts_per_step} does not divide over {world_size} ranks; use a multiple of {world_size}",
                 self.source)
        prompts_per_rank = t.prompts_per_step // world_size
        samples_per_rank = prompts_per_rank * r.n
        a = self.algo
        for key, value in [("algo.ppo_epochs", a.ppo_epochs), ("algo.mini_batches", a.mini_batches),
                           ("algo.dynamic_sampling_max_tries", a.dynamic_sampling_max_tries)]:
            _require(value >= 1, key, f"must be at least 1, got {value}", self.source)
        _require(a.overlong_buffer < r.max_new_tokens, "algo.overlong_buffer",
                 f"= {a.overlong_buffer} must be below rollout.max_new_tokens = {r.max_new_tokens}", self.source)
        lora = self.model.lora
        _require(lora.rank >= 0, "model.lora.rank", f"must be >= 0 (0 is off), got {lora.rank}", self.source)
        _require(lora.rank == 0 or (lora.alpha > 0 and 0 <= lora.dropout < 1 and bool(lora.target_modules)),
                 "model.lora", f"needs alpha > 0, dropout in [0, 1) and target modules, got {lora}", self.source)
        _require(lora.rank == 0 or r.engine != "vllm" or lora.rank in VLLM_LORA_RANKS, "model.lora.rank",
                 f"= {lora.rank}: the vllm engine takes ranks {', '.join(map(str, VLLM_LORA_RANKS))}", self.source)
        _require(0 < a.gamma <= 1, "algo.gamma", f"must be in (0, 1], got {a.gamma}", self.source)
        _require(0 <= a.gae_lambda <= 1, "algo.gae_lambda", f"must be in [0, 1], got {a.gae_lambda}", self.source)
        _require(a.lambda_alpha > 0, "algo.lambda_alpha", f"must be > 0, got {a.lambda_alpha}", self.source)
        c = self.critic
        for key, value in [("critic.lr", c.lr), ("critic.clip", c.clip)]:
            _require(value > 0, key, f"must be > 0, got {value}", self.source)
        for key, value in [("critic.lr_warmup_steps", c.lr_warmup_steps), ("critic.warmup_steps", c.warmup_steps),
                           ("critic.grad_clip", c.grad_clip)]:
            _require(value >= 0, key, f"must be >= 0, got {value}", self.source)
        _require(a.importance_cap == 0 or a.importance_cap >= 1, "algo.importance_cap",
                 f"must be 0 (off) or at least 1, got {a.importance_cap}", self.source)
        _require(t.micro_batch_tokens >= 0, "train.micro_batch_tokens", f"must be 0 (off) or positive, got "
                 f"{t.micro_batch_tokens}", self.source)
        _require(t.micro_batch_tokens == 0 or a.mini_batches == 1, "train.micro_batch_tokens",
                 f"= {t.micro_batch_tokens} cuts micro-batches by tokens, which needs algo.mini_batches = 1 (got "
                 f"{a.mini_batches}); set train.micro_batch_tokens=0 to use mini-batches", self.source)
        per_update = a.mini_batches * t.micro_batch_size
        if samples_per_rank % per_update:
            what = (f"train.micro_batch_size = {t.micro_batch_size}" if a.mini_batches == 1 else
                    f"train.micro_batch_size x algo.mini_batches = {t.micro_batch_size} x {a.mini_batches}")
            raise ConfigError(f"{what} does not divide the {samples_per_rank} sequences per rank (train.prompts_per_step "
                              f"{t.prompts_per_step} / {world_size} ranks x rollout.n {r.n}); use a divisor of "
                              f"{samples_per_rank} (in {self.source})")
        self.derived = Derived(world_size=world_size, prompts_per_rank=prompts_per_rank,
                               samples_per_rank=samples_per_rank,
                               micro_batches_per_update=samples_per_rank // per_update,
                               optimizer_steps_per_step=a.ppo_epochs * a.mini_batches)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the resolved config (derived numbers included) as YAML."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            yaml.safe_dump(self.to_dict(), f, sort_keys=False)


def _require(ok: bool, key: str, problem: str, source: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {problem} (in {source})")
