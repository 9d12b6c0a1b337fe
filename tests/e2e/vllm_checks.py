"""Run under torchrun by test_vllm_rollout.py: GRPO steps with the colocated vLLM engine and ZeRO-3,
checking after every weight sync that vLLM scores a fixed sequence exactly as the trainer does, and
finally that a deliberate weight change made in the trainer shows up in vLLM's generations.

argv: MODEL_DIR TRAIN_PARQUET RUN_DIR TENSOR_PARALLEL_SIZE CPU_LINEAR (plain or onednn). Each rank writes JSON lines to
RUN_DIR/checks_rank{R}.jsonl (stdout would interleave the ranks); exits 1 on a failed check.
"""
import json
import sys

import deepspeed
import torch

import grpo

from cli import TEST_SCALE  # this script's folder is on sys.path
from grpo.device import is_cpu
from grpo.types import SamplingSettings
from grpo.weight_sync import push_weights

model_dir, train_file, run_dir, tp, cpu_linear = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
cfg = grpo.load_config("recipes/countdown_tiny.yaml", [
    f"model.path={model_dir}", f"data.train_files=[{train_file}]", f"log.dir={run_dir}", "log.progress=false", *TEST_SCALE,
    "rollout.engine=vllm", f"rollout.tensor_parallel_size={tp}", "rollout.kv_cache_mb=64", f"rollout.cpu_linear={cpu_linear}",
    "train.lr=1.0e-3", "reward.functions=[digit_reward:digit_share]", "checkpoint.save_final=false",
    "sync.bucket_mb=1"])  # 1 MB < one tiny layer plus the embeddings: 3 loads per sync, layer by layer
trainer = grpo.Trainer(cfg)
rank, failures = trainer.dist.rank, []
report_file = open(f"{run_dir}/checks_rank{rank}.jsonl", "w")


def report(**fields):
    report_file.write(json.dumps({"rank": rank, **fields}) + "\n")
    report_file.flush()


fixed_ids = trainer.tokenizer("Using the numbers [3, 5, 2], make 16. <answer> (3 + 5) * 2 </answer>")["input_ids"]


def trainer_logprobs(ids):
    with torch.no_grad():
        logits = trainer.policy.engine(input_ids=torch.tensor([ids])).logits[0].float()
    trainer.policy.release_gathered()
    return torch.log_softmax(logits[:-1], -1).gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)


def vllm_logprobs(ids):
    from vllm import SamplingParams

    out = trainer.rollout.llm.generate([{"prompt_token_ids": ids}], SamplingParams(max_tokens=1, prompt_logprobs=0),
                                       use_tqdm=False)[0]
    return torch.tensor([step[token].logprob for token, step in zip(ids[1:], out.prompt_logprobs[1:])])


def plain_linear_weights(worker) -> bool:
    """Whether every linear layer of the engine's model still holds its weight as a parameter (on CPU the
    engine keeps them, so a sync copies into them rather than rebuilding prepacked oneDNN handles)."""
    from vllm.model_executor.layers.linear import LinearBase

    linears = [m for m in worker.get_model().modules() if isinstance(m, LinearBase)]
    return bool(linears) and all(m.weight.numel() > 0 for m in linears)


if is_cpu():
    kept = trainer.rollout.llm.collective_rpc(plain_linear_weights)[0]
    report(plain_linear_weights=kept)
    if kept != (cpu_linear == "plain"):
        failures.append(f"linear weights kept as parameters: {kept}, with rollout.cpu_linear={cpu_linear}")

before = vllm_logprobs(fixed_ids)
for step in range(1, 4):
    trainer.step = step
    metrics, _ = trainer.train_step()  # generate, score, train, push the new weights into vLLM
    trainer.rollout.wake()  # with sleep mode (GPU) the KV cache is released until the next generation
    gap = float((vllm_logprobs(fixed_ids) - trainer_logprobs(fixed_ids)).abs().max())
    moved = float((vllm_logprobs(fixed_ids) - before).abs().max())
    report(step=step, fixed_gap=gap, moved_since_start=moved, sampled_gap=metrics["rollout/logprob_diff_max"])
    if not (gap < 1e-4 and metrics["rollout/logprob_diff_max"] < 1e-4 and moved > 1e-3):
        failures.append(f"step {step}")

# A deliberate change: every logit favours one token by 128 nats (hidden size 128), if and only if
# every layer and the tied lm_head.weight reach vLLM (embeddings of ones, the target row twos,
# attention and MLP outputs zeroed so each position's hidden state is the normalised embedding).
target = trainer.tokenizer.convert_tokens_to_ids("7")
params = dict(trainer.policy.engine.module.named_parameters())
with deepspeed.zero.GatheredParameters(list(params.values()), modifier_rank=0):
    if rank == 0:
        with torch.no_grad():
            for name, p in params.items():
                if name == "model.embed_tokens.weight":
                    p.fill_(1.0)
                    p[target] = 2.0
                elif name.endswith(("o_proj.weight", "down_proj.weight")):
                    p.zero_()
                elif name.endswith("norm.weight"):
                    p.fill_(1.0)
trainer.rollout.wake_weights()
push_weights(trainer.policy, trainer.rollout, cfg.sync.bucket_mb, cfg.sync.lora_mode)
trainer.rollout.wake()
groups = trainer.rollout.generate([fixed_ids[:8]], SamplingSettings(n=4, max_new_tokens=8, seed=rank))
tokens = [t for c in groups[0] for t in c.token_ids]
worst = min(lp for c in groups[0] for lp in c.logprobs)
report(spiked_tokens=len(tokens), all_target=all(t == target for t in tokens), worst_logprob=worst)
if not (tokens and all(t == target for t in tokens) and worst > -1e-4):
    failures.append("spike")
report(failures=failures)
sys.exit(1 if failures else 0)
