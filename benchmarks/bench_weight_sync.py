"""Benchmark: seconds per weight sync (ZeRO-3 gather + load into the rollout engine) against a plain
copy of the same bytes on the same device, as a ratio; and the trainer's memory. Prints one JSON line.

    torchrun --nproc_per_node 2 benchmarks/bench_weight_sync.py --model mid --engine vllm [--lora adapter]
    python benchmarks/bench_weight_sync.py --all        # every model x engine, and LoRA on mid; torchrun x2 each

Models are random Qwen2 shapes built locally: tiny (0.43M parameters) and mid (~105M: hidden 768,
12 layers, 12 heads of 64, 4 KV heads, MLP 3072). One vLLM engine per process, so --all runs each
combination in its own torchrun job and prints their results together.

--lora adapter|merged trains LoRA adapters (--lora-rank, all linear layers) and syncs as sync.lora_mode
says; the plain copy is then of the bytes that sync sends. `trainer_mb` is the memory the training engine
adds on a rank (the policy, its reference for a KL of 0.001, gradients and optimizer state after one step:
resident memory on CPU, the accelerator's peak elsewhere); with LoRA the reference is the policy with its
adapter disabled, so no second copy of the base is loaded.
"""
from __future__ import annotations

import argparse
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

MODELS = {
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=32),
    "mid": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                num_key_value_heads=4, head_dim=64),
}


def build_model(name: str, folder: Path) -> None:
    """Rank 0 writes a random model of the named shape with the tiny tokenizer into folder."""
    import importlib.util

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    spec = importlib.util.spec_from_file_location("build_tiny", REPO / "launch" / "build_tiny.py")
    build_tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_tiny)
    from grpo.data.countdown import make_countdown_rows

    tokenizer = build_tiny.build_tokenizer(build_tiny.make_corpus(make_countdown_rows(200, seed=0)))
    config = Qwen2Config(vocab_size=1024, max_position_embeddings=1024, tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=None, **MODELS[name])
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def one_step(train) -> None:
    """One optimizer step on a made-up batch, so the optimizer's state exists when memory is read."""
    import torch

    from grpo.batching import build_micro_batches
    from grpo.types import Completion, PromptRecord

    prompt = PromptRecord("p", list(range(3, 19)), "", "x", 0)
    (mb,) = build_micro_batches([prompt], [[Completion(list(range(20, 36)), [0.0] * 16, "", "stop")]], 1, 0,
                                torch.device(train.dist.device))
    logp_BT, _ = train.policy_logprobs(mb, 1.0)
    train.backward(-logp_BT.mean(), last=True)
    train.step()


def run_one(model: str, engine: str, repeats: int, bucket_mb: int, lora: str = "off", lora_rank: int = 32) -> dict:
    import torch
    import torch.distributed as dist

    from grpo.config import Config
    from grpo.device import init_distributed, memory_now_gb
    from grpo.rollout import build_rollout_engine
    from grpo.train.deepspeed import DeepSpeedTrainEngine
    from grpo.weight_sync import push_weights
    from transformers import AutoTokenizer

    info = init_distributed()
    folder = Path(os.environ.get("BENCH_MODEL_DIR", tempfile.gettempdir())) / f"bench_sync_{model}"
    if info.rank == 0 and not (folder / "config.json").exists():
        build_model(model, folder)
    dist.barrier()
    cfg = Config()
    cfg.model.path, cfg.model.dtype, cfg.algo.kl_coef = str(folder), "float32", 0.001
    if lora != "off":
        cfg.model.lora.rank, cfg.model.lora.alpha, cfg.sync.lora_mode = lora_rank, 2.0 * lora_rank, lora
    cfg.data.train_files, cfg.data.max_prompt_length = ["unused"], 128
    cfg.rollout.engine, cfg.rollout.max_new_tokens, cfg.rollout.kv_cache_mb = engine, 64, 64
    cfg.train.prompts_per_step, cfg.rollout.n, cfg.train.micro_batch_size = info.world_size, 2, 1
    cfg.sync.bucket_mb = bucket_mb
    cfg.finalize(info.world_size)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rollout = build_rollout_engine(cfg, tokenizer, info)  # before the ZeRO-3 engine, as the Trainer does
    before_gb = memory_now_gb()
    train = DeepSpeedTrainEngine(cfg, info)
    one_step(train)
    trainer_mb = (memory_now_gb() - before_gb) * 1024

    def timed(fn) -> float:
        dist.barrier()
        start = time.perf_counter()
        fn()
        dist.barrier()
        return time.perf_counter() - start

    mode = cfg.sync.lora_mode
    sync_metrics = push_weights(train, rollout, bucket_mb, mode)  # warm-up
    sync_s = [timed(lambda: push_weights(train, rollout, bucket_mb, mode)) for _ in range(repeats)]
    named = train.named_parameters_for_sync()
    if lora == "adapter":  # the plain copy is of what the sync sends
        named = [(name, p) for name, p in named if ".lora_" in name]
    unique = list({id(p): p for _, p in named}.values())
    with train.gathered(unique):
        sources = [p.data.detach().clone() for p in unique]
    targets = [torch.empty_like(t) for t in sources]

    def plain_copy():
        for target, source in zip(targets, sources):
            target.copy_(source)

    plain_copy()
    copy_s = [timed(plain_copy) for _ in range(repeats)]
    # where a full sync's time goes: the gather alone (no load), and the load alone (of already whole tensors)
    gather_s = load_s = None
    if lora == "off":
        def gather_only():
            with train.gathered(unique):
                pass

        whole = [(name, sources[[id(p) for p in unique].index(id(param))]) for name, param in named]
        gather_s = statistics.median(timed(gather_only) for _ in range(repeats))
        load_s = statistics.median(timed(lambda: rollout.load_weights(whole)) for _ in range(repeats))
    result = {"bench": "weight_sync", "model": model, "engine": engine, "lora": lora,
              "lora_rank": lora_rank if lora != "off" else 0, "world_size": info.world_size,
              "trainer_mb": round(trainer_mb, 1),
              "params_m": round(sum(t.numel() for t in sources) / 1e6, 2), "megabytes": round(sync_metrics["sync/megabytes"], 2),
              "bucket_mb": bucket_mb, "loads_per_sync": int(sync_metrics["sync/buckets"]), "repeats": repeats,
              "sync_s": round(statistics.median(sync_s), 4), "copy_s": round(statistics.median(copy_s), 4),
              "gather_s": round(gather_s, 4) if gather_s is not None else None,
              "load_s": round(load_s, 4) if load_s is not None else None}
    result["ratio"] = round(result["sync_s"] / result["copy_s"], 1)
    return result


def run_all(repeats: int, bucket_mb: int, lora_rank: int) -> list[dict]:
    results = []
    jobs = [(model, engine, "off") for model in MODELS for engine in ("hf", "vllm")]
    jobs += [("mid", engine, lora) for lora in ("adapter", "merged") for engine in ("hf", "vllm")]
    for model, engine, lora in jobs:
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   __file__, "--model", model, "--engine", engine, "--repeats", str(repeats), "--lora", lora,
                   "--lora-rank", str(lora_rank), "--bucket-mb", str(bucket_mb), "--out", f"{out}/result.json"]
            done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            if done.returncode != 0:
                results.append({"model": model, "engine": engine, "lora": lora, "error": done.stderr[-2000:]})
                continue
            results.append(json.loads(Path(out, "result.json").read_text()))
        print(f"{model}/{engine}/{lora}: {results[-1]}", file=sys.stderr, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--engine", choices=["hf", "vllm"], default="vllm")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bucket-mb", type=int, default=512)
    parser.add_argument("--lora", choices=["off", "adapter", "merged"], default="off",
                        help="train LoRA adapters and sync them as sync.lora_mode says")
    parser.add_argument("--lora-rank", type=int, default=32)
    parser.add_argument("--all", action="store_true", help="every model x engine, each in a torchrun x2 job")
    parser.add_argument("--out", help="also write the result JSON here (rank 0)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if args.all:
        print(json.dumps({"bench": "weight_sync", "results": run_all(args.repeats, args.bucket_mb, args.lora_rank)}),
              flush=True)
        return
    result = run_one(args.model, args.engine, args.repeats, args.bucket_mb, args.lora, args.lora_rank)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
