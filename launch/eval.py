"""Evaluate a model on prepared benchmarks: greedy pass@1 and sampled avg@k, maj@k, pass@k per benchmark.

    python launch/eval.py MODEL --benchmarks math500=data/math500/test.parquet,aime24=data/aime24/test.parquet
    torchrun --nproc_per_node 8 launch/eval.py runs/x/final --benchmarks data/gsm8k/test.parquet --engine vllm
    python launch/eval.py .cache/tiny/model --benchmarks cd=.cache/tiny/countdown_test.parquet --template raw --k 8

MODEL is a Hugging Face folder (weights + tokenizer) or hub id. A training run's policy is one already
(LOG_DIR/final); other checkpoints of the trainer become one with launch/export.py. Benchmarks are
files prepared by launch/prepare_data.py (parquet/jsonl/json/csv with the verl columns), given as
NAME=FILE or FILE (named by its stem); one --template renders them all (Countdown rows carry their
whole prompt: evaluate them with --template raw). Trailing section.key=value arguments set any other
config key, e.g. rollout.kv_cache_mb=512 or data.max_prompt_length=1024. Prints the results table and
writes OUT/eval.json, OUT/samples.jsonl (a few greedy completions) and TensorBoard scalars in
OUT/tensorboard; with eval.save_completions=true also OUT/completions.jsonl (every completion and its
verdict). Runs as plain python (one process) or under torchrun (prompts split over ranks).
Mistakes in the input print one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[2:]))
    p.add_argument("model", help="Hugging Face model folder or hub id (a trainer checkpoint exported by launch/export.py, "
                                 "or a run's LOG_DIR/final)")
    p.add_argument("overrides", nargs="*", help="config keys as section.key=value (rollout.*, data.*, eval.*)")
    p.add_argument("--benchmarks", action="append", required=True,
                   help="NAME=FILE[,NAME=FILE...] or FILE (named by its stem); may be repeated")
    p.add_argument("--template", help="prompt template for every benchmark (default: data.template, qwen_r1)")
    p.add_argument("--templates-file", help="JSON file of extra templates (data.templates_file)")
    p.add_argument("--k", type=int, help="sampled completions per prompt for avg@k/maj@k/pass@k; 0: greedy only (default 4)")
    p.add_argument("--temperature", type=float, help="sampling temperature of the k samples (default 1.0)")
    p.add_argument("--max-new-tokens", type=int, help="longest response in tokens (default: rollout.max_new_tokens, 1024)")
    p.add_argument("--max-prompts", type=int, help="only the first N prompts of each benchmark (default: all)")
    p.add_argument("--stop", action="append", help="a string that ends a completion, besides the template's (repeatable)")
    p.add_argument("--engine", choices=["hf", "vllm"], help="rollout engine (default hf)")
    p.add_argument("--dtype", choices=["bfloat16", "float32"], help="weights' precision (default bfloat16)")
    p.add_argument("--seed", type=int, help="sampling seed (default train.seed, 42)")
    p.add_argument("--step", type=int, default=0, help="training step to file the TensorBoard scalars under (default 0)")
    p.add_argument("--out", default="runs/eval", help="output folder for eval.json, samples.jsonl, tensorboard/")
    return p.parse_intermixed_args(argv)  # config keys may come before or after the options


def build_config(args: argparse.Namespace):
    """The Config the rollout engine and the Evaluator read: overrides first, then the flags that were given."""
    from grpo.recipe import load_config
    from grpo.errors import UserError

    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise UserError(f"unexpected argument {bad[0]!r}: give one MODEL, then config keys as section.key=value")
    cfg = load_config(None, args.overrides)
    from grpo.data import check_model_path

    check_model_path(args.model, "model")
    cfg.source = "launch/eval.py arguments"
    cfg.model.path = args.model
    cfg.eval.files = [spec.strip() for group in args.benchmarks for spec in group.split(",") if spec.strip()]
    for target, key, value in [(cfg.data, "template", args.template), (cfg.data, "templates_file", args.templates_file),
                               (cfg.eval, "k", args.k), (cfg.eval, "temperature", args.temperature),
                               (cfg.eval, "max_new_tokens", args.max_new_tokens), (cfg.eval, "max_prompts", args.max_prompts),
                               (cfg.rollout, "engine", args.engine), (cfg.model, "dtype", args.dtype),
                               (cfg.train, "seed", args.seed)]:
        if value is not None:
            setattr(target, key, value)
    cfg.rollout.stop = list(dict.fromkeys(cfg.rollout.stop + (args.stop or [])))
    if cfg.eval.max_new_tokens:  # the vllm engine sizes its context by rollout.max_new_tokens
        cfg.rollout.max_new_tokens = cfg.eval.max_new_tokens
    if not cfg.eval.files:
        raise UserError("--benchmarks names no file; give NAME=FILE[,NAME=FILE...]")
    from grpo.evaluate import parse_benchmark_spec

    for spec in cfg.eval.files:  # checked here so a typo costs a second, not a model load
        name, path = parse_benchmark_spec(spec)
        if not Path(path).is_file():
            raise UserError(f"benchmark {name}: no such file {path!r}; prepare one with launch/prepare_data.py")
    return cfg


def write_outputs(out: Path, metrics: dict[str, float], samples: list[dict], meta: dict, step: int,
                  completions: list[dict] = ()) -> None:
    """OUT/eval.json, OUT/samples.jsonl, OUT/completions.jsonl when there are any, and TensorBoard scalars at
    `step` in OUT/tensorboard (rank 0 only)."""
    from torch.utils.tensorboard import SummaryWriter

    from grpo.evaluate import write_eval_json
    from grpo.metrics import jsonable

    write_eval_json(out / "eval.json", metrics, meta)
    files = {"samples.jsonl": samples, **({"completions.jsonl": completions} if completions else {})}
    for name, rows in files.items():
        with open(out / name, "w") as f:
            for row in rows:
                f.write(json.dumps(row, default=jsonable) + "\n")
    writer = SummaryWriter(log_dir=str(out / "tensorboard"))
    for key, value in metrics.items():
        writer.add_scalar(key, value, step)
    writer.close()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from grpo.errors import UserError

    rank0 = os.environ.get("RANK", "0") == "0"
    try:
        cfg = build_config(args)
        from grpo.data import load_tokenizer
        from grpo.device import init_distributed
        from grpo.evaluate import Evaluator, format_table, parse_benchmark_spec
        from grpo.rollout import build_rollout_engine

        dist = init_distributed()
        log = (lambda text: print(text, flush=True)) if dist.rank == 0 else None
        tokenizer = load_tokenizer(cfg.model.path)
        # input mistakes surface before the model loads; the engine's context fits the longest prompt
        evaluator = Evaluator.from_config(cfg, tokenizer, dist, log, grow_prompt_length=True)
        if log:
            log(f"eval: {cfg.model.path} with the {cfg.rollout.engine} engine on {dist.world_size} rank(s), template "
                f"{cfg.data.template}, k={evaluator.k}, temperature {evaluator.temperature}, "
                f"max_new_tokens {evaluator.max_new_tokens}, stop {evaluator.stop}")
        engine = build_rollout_engine(cfg, tokenizer, dist)
        engine.wake()
        metrics = evaluator.run(engine)
        if dist.rank == 0:
            out = Path(args.out)
            meta = {"model": cfg.model.path, "step": args.step, "engine": cfg.rollout.engine, "dtype": cfg.model.dtype,
                    "template": cfg.data.template, "k": evaluator.k, "temperature": evaluator.temperature,
                    "max_new_tokens": evaluator.max_new_tokens, "max_prompt_length": cfg.data.max_prompt_length,
                    "stop": evaluator.stop, "seed": cfg.train.seed,
                    "world_size": dist.world_size, "files": dict(parse_benchmark_spec(s) for s in cfg.eval.files)}
            write_outputs(out, metrics, evaluator.samples, meta, args.step, evaluator.completions)
            print(format_table(metrics), flush=True)
            written = ["eval.json", "samples.jsonl", *(["completions.jsonl"] if evaluator.completions else []), "tensorboard"]
            print(f"wrote {', '.join(str(out / name) for name in written)}", flush=True)
    except UserError as e:
        if rank0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
