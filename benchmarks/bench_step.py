"""Benchmark: seconds per GRPO step, ours (grpo.Trainer) against TRL 1.16's GRPOTrainer on the same work.

    python benchmarks/bench_step.py --model mid --engines hf,vllm          # CPU, fp32: one JSON line
    python benchmarks/bench_step.py --model mid --device cuda --dtype bfloat16 --engines hf

Same for both sides: a random Qwen2 of the named shape (built once by bench_weight_sync.build_model),
8 Countdown prompts (grpo.data.countdown.make_countdown_rows, seed 0, TinyZero's prompt as is) with
n=8 completions each and at most --max-new-tokens tokens, temperature 1 with no top-k/top-p, the
Countdown reward, no KL term (no reference model), token-mean loss with clip 0.2, AdamW at lr 1e-6
with the gradient clipped at 1, one optimizer step per GRPO step over the same micro-batch size,
gradient checkpointing as --gradient-checkpointing says, one process (world size 1), one torch thread.
Our side is a Trainer built from a Config (ZeRO stage --zero-stage under DeepSpeed, our rollout
engine, weight sync after every step); TRL generates with the training model (transformers generate).

The driver runs each side in its own subprocess, alternating (ours per engine, TRL, ours, TRL, ...)
for --rounds rounds; each subprocess does a warm-up step and then --steps timed steps, so start-up
and first-step costs are excluded. A step is timed from one optimizer step's end to the next: for
ours one `Trainer.train_step()` (generate, score, logprobs, train, sync), for TRL the time between
`on_step_end` callbacks. It prints one JSON line: per engine our median, TRL's median, their ratio
(ours / TRL) in wall-clock and in CPU seconds (the process's CPU time, steadier on a shared machine),
our median phase breakdown and the mean completion length each side generated.

--lengths uneven gives every side the same long-tailed distribution of completion lengths (a Pareto
tail up to the cap, benchmarks/uneven_lengths.py: most stop early, one in nine reaches the cap).
--micro-batch-tokens cuts our micro-batches by packed tokens (train.micro_batch_tokens) instead of 16
sequences; set it to TRL's padded micro-batch, 16 x (prompt + cap), for the same activation memory.
Per engine the line also reports `padding_flops_share`: the share of training-forward FLOPs spent on
padding and masked-out attention pairs, for what ran ("ours"), for the same sequences as the code
before row packing laid them out ("before": 16 sequences per micro-batch, each distinct prompt once
per row where cheaper) and fully padded as TRL pads them ("padded"); and `decode`: decoded tokens per
second of generation against the memory-bandwidth bound, weight bytes x decode steps (the longest
completion) over the bandwidth of a plain copy (bytes read plus written), as `bound_over_actual`.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPTS, N = 8, 8
LR, CLIP, SEED = 1e-6, 0.2, 0


def _weight_sync_bench():
    """benchmarks/bench_weight_sync.py as a module: its model shapes and builder are the shared ones."""
    spec = importlib.util.spec_from_file_location("bench_weight_sync", REPO / "benchmarks" / "bench_weight_sync.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepare(model: str, workdir: Path) -> tuple[Path, Path]:
    """The model folder (built once, cached like bench_weight_sync's) and a jsonl of the 8 prompts."""
    from grpo.data.countdown import make_countdown_rows

    folder = Path(os.environ.get("BENCH_MODEL_DIR", tempfile.gettempdir())) / f"bench_sync_{model}"
    if not (folder / "config.json").exists():
        _weight_sync_bench().build_model(model, folder)
    data = workdir / "countdown.jsonl"
    with open(data, "w") as f:
        for row in make_countdown_rows(PROMPTS, seed=SEED):
            f.write(json.dumps(row) + "\n")
    return folder, data


# -- one side, in its own process ---------------------------------------------------------------

def run_ours(args, folder: Path, data: Path, engine: str) -> dict:
    import torch

    import grpo

    torch.set_num_threads(args.threads)
    cfg = grpo.Config()
    cfg.model.path, cfg.model.dtype = str(folder), args.dtype
    cfg.model.gradient_checkpointing = args.gradient_checkpointing
    cfg.data.train_files, cfg.data.template = [str(data)], "raw"
    cfg.rollout.engine, cfg.rollout.n, cfg.rollout.max_new_tokens = engine, N, args.max_new_tokens
    cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.top_k = 1.0, 1.0, 0
    cfg.rollout.kv_cache_mb = 256
    cfg.train.prompts_per_step, cfg.train.micro_batch_size = PROMPTS, args.micro_batch
    cfg.train.lr, cfg.train.grad_clip, cfg.train.zero_stage, cfg.train.seed = LR, 1.0, args.zero_stage, SEED
    cfg.train.pack_prompts = not args.no_pack
    cfg.algo.kl_coef, cfg.algo.clip_low, cfg.algo.clip_high, cfg.algo.loss_agg = 0.0, CLIP, CLIP, "token_mean"
    cfg.log.dir = tempfile.mkdtemp(prefix="bench_step_")
    cfg.log.tensorboard, cfg.log.progress, cfg.log.samples_every = False, False, 0
    cfg.checkpoint.every_steps, cfg.checkpoint.save_final = 0, False
    if args.micro_batch_tokens:  # cut by tokens (packed: real tokens), rows uncapped
        cfg.train.micro_batch_size, cfg.train.micro_batch_tokens = PROMPTS * N, args.micro_batch_tokens
    if args.lengths == "uneven" and engine == "vllm":
        _vllm_with_uneven_lengths(folder, args.max_new_tokens)
    trainer = grpo.Trainer(cfg)
    if args.lengths == "uneven" and engine == "hf":
        uneven = _uneven_lengths()
        uneven.install_transformers_hook(trainer.rollout.model, _eos_id(folder), args.max_new_tokens)
    seen = _record_rollout_lengths()
    copy_bytes_per_s = _copy_bandwidth()
    weight_bytes = sum(t.numel() * t.element_size() for t in
                       {p.data_ptr(): p for p in trainer.policy.engine.module.parameters()}.values())
    steps, cpu, phases, lengths, padding, decode = [], [], [], [], [], []
    for i in range(1 + args.steps):  # the first is the warm-up
        trainer.step += 1
        start, start_cpu = time.perf_counter(), time.process_time()
        metrics, _ = trainer.train_step()
        elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
        if i > 0:
            steps.append(elapsed)
            cpu.append(elapsed_cpu)
            phases.append({k[5:]: v for k, v in metrics.items() if k.startswith("time/") and k != "time/step"})
            lengths.append(metrics["response/length_mean"])
            padding.append({"ours": metrics["train/padding_flops_share"],
                            **_padding_shares_before(trainer, seen[-1], args.micro_batch)})
            # lock-step decoding (and vLLM with every request submitted at once) runs as many decode steps
            # as the longest completion; each must read every weight once
            completion_lengths = [n for group in seen[-1][1] for n in group]
            bound_s = max(completion_lengths) * weight_bytes / copy_bytes_per_s
            decode.append({"tokens": sum(completion_lengths), "generate_s": metrics["time/generate"],
                           "bound_s": bound_s})
    return {"step_s": steps, "cpu_s": cpu, "phases": phases, "length_mean": statistics.mean(lengths),
            "padding": padding, "decode": decode, "copy_gb_per_s": copy_bytes_per_s / 1e9,
            "weight_mb": weight_bytes / 2**20}


def _copy_bandwidth(nbytes: int = 256 * 2**20) -> float:
    """Memory bandwidth by a plain copy_ between two large tensors: bytes read plus bytes written per second,
    from the fastest of 5 (after a warm-up; the fastest, since other work on a shared machine only slows it)."""
    import torch

    source, target = torch.ones(nbytes // 4), torch.empty(nbytes // 4)
    target.copy_(source)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        target.copy_(source)
        times.append(time.perf_counter() - start)
    return 2 * nbytes / min(times)


def _uneven_lengths():
    spec = importlib.util.spec_from_file_location("uneven_lengths", REPO / "benchmarks" / "uneven_lengths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _eos_id(folder: Path) -> int:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder).eos_token_id


def _vllm_with_uneven_lengths(folder: Path, cap: int) -> None:
    """Our vLLM engine builds vllm.LLM: make it one that applies the uneven-lengths logits processor."""
    import vllm

    processor = _uneven_lengths().vllm_logits_processor(_eos_id(folder), cap)
    base = vllm.LLM

    class LLMWithUnevenLengths(base):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("logits_processors", [processor])
            super().__init__(*args, **kwargs)

    vllm.LLM = LLMWithUnevenLengths


def _record_rollout_lengths() -> list:
    """Each step's (prompt lengths, completion lengths per group), seen where the trainer builds micro-batches."""
    import grpo.trainer

    seen, build = [], grpo.trainer.build_micro_batches

    def recording(prompts, groups, *args, **kwargs):
        seen.append(([len(p.prompt_ids) for p in prompts], [[len(c.token_ids) for c in g] for g in groups]))
        return build(prompts, groups, *args, **kwargs)

    grpo.trainer.build_micro_batches = recording
    return seen


def _padding_shares_before(trainer, lengths, micro_batch: int) -> dict[str, float]:
    """The padding share of forward FLOPs for this step's sequences as the code before row packing laid them
    out (micro-batches of `micro_batch` sequences, each distinct prompt once per row where cheaper: "before")
    and fully padded like TRL (the whole batch padded to its longest prompt and completion: "padded")."""
    import torch

    from grpo.batching import build_micro_batches
    from grpo.train.packing import FlopModel, forward_layout, layout_flops, padded_layout
    from grpo.types import Completion, PromptRecord

    prompt_lengths, groups = lengths
    prompts = [PromptRecord("", list(range(i * 1000 + 1, i * 1000 + 1 + n)), None, "x", i)
               for i, n in enumerate(prompt_lengths)]
    completions = [[Completion([7] * n, [0.0] * n, "", "stop") for n in g] for g in groups]
    config = trainer.policy.model_config()
    flops = FlopModel.from_config(config)
    flops = FlopModel(flops.per_token, flops.per_pair, flops.per_logit_row, flops.mask_kind or "bool")
    shares = {}
    for name, size in (("before", micro_batch), ("padded", sum(map(len, groups)))):
        computed = needed = 0.0
        for mb in build_micro_batches(prompts, completions, size, 0, torch.device("cpu")):
            # before row packing, forward_layout chose between these two (row_packing is off in `flops`)
            layout = forward_layout(mb, flops) if name == "before" else padded_layout(mb)
            c, n = layout_flops(flops, mb, layout)
            computed, needed = computed + c, needed + n
        shares[name] = 1.0 - needed / computed
    return shares


def run_trl(args, folder: Path, data: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from grpo.rewards import score

    torch.set_num_threads(args.threads)
    rows = [json.loads(line) for line in open(data)]
    dataset = Dataset.from_list([{"prompt": r["prompt"][0]["content"], "nums": r["nums"], "target": r["target"]}
                                 for r in rows])  # a plain string prompt: TRL applies no chat template

    def countdown_reward(prompts, completions, nums, target, **_):
        return [score("countdown", c, {"numbers": n, "target": t}).score for c, n, t in zip(completions, nums, target)]

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends = []

        def on_step_end(self, *_args, **_kwargs):
            self.ends.append((time.perf_counter(), time.process_time()))

    clock = StepClock()
    per_step = PROMPTS * N
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench_trl_"), report_to="none", save_strategy="no", logging_steps=1,
        seed=SEED, use_cpu=args.device == "cpu", bf16=args.dtype == "bfloat16", max_steps=1 + args.steps,
        per_device_train_batch_size=args.micro_batch, gradient_accumulation_steps=per_step // args.micro_batch,
        num_generations=N, max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0,
        learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, beta=0.0,
        epsilon=CLIP, loss_type="dapo", gradient_checkpointing=args.gradient_checkpointing,
        dataloader_num_workers=0, disable_tqdm=True)
    trainer = GRPOTrainer(model=str(folder), reward_funcs=[countdown_reward], args=config, train_dataset=dataset,
                          processing_class=AutoTokenizer.from_pretrained(folder), callbacks=[clock])
    if args.lengths == "uneven":  # TRL generates with the training model itself
        _uneven_lengths().install_transformers_hook(trainer.model, _eos_id(folder), args.max_new_tokens)
    trainer.train()
    # from the first step's end on: the warm-up step is excluded
    steps = [b[0] - a[0] for a, b in zip(clock.ends, clock.ends[1:])]
    cpu = [b[1] - a[1] for a, b in zip(clock.ends, clock.ends[1:])]
    logs = [h for h in trainer.state.log_history if "completions/mean_length" in h][1:]
    # TRL's own step_time covers its training_step calls (generation included, the optimizer step not)
    return {"step_s": steps, "cpu_s": cpu, "length_mean": statistics.mean(h["completions/mean_length"] for h in logs),
            "own_step_time": [h["step_time"] for h in logs if "step_time" in h]}


# -- the driver ----------------------------------------------------------------------------------

def worker_env(args) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONWARNINGS="ignore", TRANSFORMERS_VERBOSITY="error")
    env.setdefault("DS_ACCELERATOR", args.device)
    return env


def run_side(args, side: str, workdir: Path) -> dict:
    out = workdir / f"{side}.json"
    cmd = [sys.executable, __file__, "--side", side, "--workdir", str(workdir), *args.passthrough]
    done = subprocess.run(cmd, cwd=REPO, env=worker_env(args), capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"{side} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="a shape of bench_weight_sync.MODELS: tiny or mid")
    parser.add_argument("--engines", default="hf", help="our rollout engines to time, comma-separated: hf,vllm")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--micro-batch", type=int, default=16, help="sequences per forward/backward, both sides")
    parser.add_argument("--micro-batch-tokens", type=int, default=0,
                        help="ours: cut micro-batches by this many (packed) tokens instead (train.micro_batch_tokens)")
    parser.add_argument("--lengths", choices=["fixed", "uneven"], default="fixed",
                        help="uneven: long-tailed completion lengths on every side (benchmarks/uneven_lengths.py)")
    parser.add_argument("--zero-stage", type=int, default=0, help="ours; TRL in one process uses no DeepSpeed")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="both sides")
    parser.add_argument("--no-pack", action="store_true", help="ours: train.pack_prompts=false")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads per process, both sides")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per subprocess, after one warm-up step")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of (ours per engine, TRL)")
    parser.add_argument("--no-trl", action="store_true", help="time ours only (no ratio)")
    parser.add_argument("--side", help=argparse.SUPPRESS)  # internal: run one side in this process
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        workdir = Path(args.workdir)
        folder, data = Path((workdir / "model_path").read_text()), workdir / "countdown.jsonl"
        result = run_trl(args, folder, data) if args.side == "trl" else run_ours(args, folder, data,
                                                                               args.side.split("-")[1])
        (workdir / f"{args.side}.json").write_text(json.dumps(result))
        return
    args.passthrough = [a for a in sys.argv[1:]]
    engines = [e for e in args.engines.split(",") if e]
    sides = [f"ours-{e}" for e in engines] + ([] if args.no_trl else ["trl"])
    with tempfile.TemporaryDirectory(prefix="bench_step_") as tmp:
        workdir = Path(tmp)
        folder, _ = prepare(args.model, workdir)
        (workdir / "model_path").write_text(str(folder))
        collected = {side: [] for side in sides}
        for r in range(args.rounds):
            for side in sides:
                collected[side].append(run_side(args, side, workdir))
                last = collected[side][-1]
                print(f"round {r} {side}: wall {[round(s, 2) for s in last['step_s']]} "
                      f"cpu {[round(s, 2) for s in last['cpu_s']]}",
                      file=sys.stderr, flush=True)
    result = {"bench": "grpo_step", "model": args.model, "params_m": _params_m(folder), "device": args.device,
              "dtype": args.dtype, "prompts": PROMPTS, "n": N, "max_new_tokens": args.max_new_tokens,
              "micro_batch": args.micro_batch, "micro_batch_tokens": args.micro_batch_tokens,
              "lengths": args.lengths, "zero_stage": args.zero_stage, "pack_prompts": not args.no_pack,
              "gradient_checkpointing": args.gradient_checkpointing, "threads": args.threads, "world_size": 1,
              "timed_steps_per_side": args.steps * args.rounds}
    trl_s = None
    if not args.no_trl:
        runs = collected["trl"]
        trl_s = statistics.median(s for run in runs for s in run["step_s"])
        trl_cpu = statistics.median(s for run in runs for s in run["cpu_s"])
        own = [s for run in runs for s in run["own_step_time"]]
        result["trl"] = {"median_s": round(trl_s, 3), "median_cpu_s": round(trl_cpu, 3),
                         "own_step_time_s": round(statistics.median(own), 3) if own else None,
                         "length_mean": round(statistics.mean(r["length_mean"] for r in runs), 1)}
    for engine in engines:
        runs = collected[f"ours-{engine}"]
        ours_s = statistics.median(s for run in runs for s in run["step_s"])
        ours_cpu = statistics.median(s for run in runs for s in run["cpu_s"])
        phases = {name: round(statistics.median(p[name] for run in runs for p in run["phases"]), 3)
                  for name in runs[0]["phases"][0]}
        padding = [p for run in runs for p in run["padding"]]
        entry = {"median_s": round(ours_s, 3), "median_cpu_s": round(ours_cpu, 3), "phases_s": phases,
                 "length_mean": round(statistics.mean(r["length_mean"] for r in runs), 1),
                 "padding_flops_share": {k: round(statistics.mean(p[k] for p in padding), 3) for k in padding[0]}}
        decode = [d for run in runs for d in run["decode"]]
        generate_s = sum(d["generate_s"] for d in decode)
        entry["decode"] = {"tokens_per_s": round(sum(d["tokens"] for d in decode) / generate_s, 1),
                           "weight_mb": round(runs[0]["weight_mb"], 1),
                           "copy_gb_per_s": round(statistics.median(r["copy_gb_per_s"] for r in runs), 2),
                           "bandwidth_bound_s": round(sum(d["bound_s"] for d in decode) / len(decode), 3),
                           "generate_s": round(generate_s / len(decode), 3),
                           "bound_over_actual": round(sum(d["bound_s"] for d in decode) / generate_s, 3)}
        if trl_s:
            entry["ratio_vs_trl"] = round(ours_s / trl_s, 3)
            entry["cpu_ratio_vs_trl"] = round(ours_cpu / trl_cpu, 3)
        result[f"ours_{engine}"] = entry
    print(json.dumps(result), flush=True)


def _params_m(folder: Path) -> float:
    import math

    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:  # the tied head is stored once
        return round(sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys()) / 1e6, 2)


if __name__ == "__main__":
    main()
