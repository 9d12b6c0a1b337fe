"""Build a small pretrained base model for Countdown, fully offline: the stand-in for "a base model".

    python launch/build_base.py --out .cache/base [--minutes 6.5] [--seed 0] [--procs 2] [--force]

R1-Zero starts RL from a base model that already writes the answer format and sometimes solves the
task. This builds one from nothing: a tokenizer and a Qwen2 of 0.8M parameters (build_tiny's
functions) pretrained with AdamW on worked Countdown attempts (grpo.data.countdown.worked_completion):
3 numbers in 1..9, a restatement of the task, two-step tries until one reaches the target or the
writer gives up, then the last try's expression as the answer. Every second step goes toward the
target (a directed try: "7+3=10,10+2=12", never "10-2=8", for 19), so a miss is a wrong first step,
and which first step reaches the target shows only once a try is written: a try after a miss hits 3
times in 10, like a first one, and the way to reach the target more often is to try more. A miss is
written as one ("7+3=10,10+2=12 not 19"). The writers rarely go on after a miss (a miss is followed by
"wait" and another try in 17% of the texts); the texts that stop after a miss are all wrong. The
writers also slip now and then (1 in 10 wrong tries written as reaching the target) and sometimes
re-check a try that reached the target ("verify 7*3=21,21-2=19 ok", or "... wait" and another try):
4% of the texts check, right 86% of the time against 33%. So the model answers in the reward's form
from the start, stops early, and searching on and re-checking are there to be found: the room RL
has to improve.

Writes OUT/model/ (tokenizer + Qwen2ForCausalLM, fp32 safetensors), OUT/countdown_train.parquet
(2000 RL prompts, TinyZero's format, data_source countdown), OUT/countdown_test.parquet (256
distinct held-out tasks, drawn first: none is in the pretraining corpus or the train file) and
OUT/build.json (seed, steps, minutes, final loss, test accuracy greedy and sampled). An existing
OUT/model/config.json is reused unless --force or build.json records other settings (an older
version of this script, another seed or length). --minutes sets the length as a number of steps
(STEPS_PER_MINUTE per minute), so the same flags build the same model on any machine.

Measured here on two free cores: 1950 steps, 6.1 min (5.4 of them pretraining, with another job
on the cores now and then), final loss 0.139; on the 256 test tasks greedy decoding is right 15.6%
of the time (format 100%), and sampling at temperature 1 gives 18.8% per sample and pass@8 70.7%.
A model this small computes its tries unreliably (about a third of its tries have a wrong step), so its
own retries pay less than the corpus's: see README for what GRPO does.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:
    import grpo  # noqa: F401
except ImportError:  # run as a script from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # build_tiny beside this file

from build_tiny import TAG_TOKENS, build_model, build_tokenizer  # noqa: E402

from grpo.data.countdown import (  # noqa: E402
    countdown_attempts, make_countdown_rows, problem_key, worked_completion, write_parquet,
)

# Small tasks keep the arithmetic a tiny model must learn small: 3 numbers in 1..9, targets in 1..99.
TASK = {"num_numbers": (3,), "max_number": 9, "max_target": 99}
# Worked attempts (worked_completion): every value in 0..99, and a second step that only adds or
# subtracts (two-digit products and quotients were the steps a few minutes of training got wrong).
# A task counts only if such an attempt solves it: about 3 in 4 tasks of TASK do.
# Every second step goes toward the target (directed), so a miss is a wrong first step and the way on is
# another try, which hits 3 times in 10 like the first; a miss is written as one ("... not 19"). Tries after
# a miss are rare (continue_rate 0.25) and start with "wait"; 1 in 10 wrong tries is a slip that a re-check
# (1 in 10 claimed hits) catches. Every answer is the last try's expression.
WORK = {"hit_rate": 0.3, "continue_rate": 0.25, "max_tries": 6, "max_value": 99, "step2_ops": "+-",
        "slip_rate": 0.1, "check_rate": 0.1, "retry_word": "wait", "directed": True, "miss_word": "not"}
# hidden 128 with 4 heads of 32 (2 KV heads), 3 layers: 0.8M parameters.
MODEL = {"hidden_size": 128, "intermediate_size": 512, "num_layers": 3, "num_heads": 4, "num_kv_heads": 2,
         "head_dim": 32}
TOKENS_PER_STEP = 3072  # padded tokens in one batch (about 45 tasks); batches hold sequences of similar length
LR, WARMUP, MIN_LR_FRACTION = 3e-3, 30, 0.1
STEPS_PER_MINUTE = 300  # --minutes -> steps (a fixed count: two free cores here run about 500 a minute)
FULL_PROMPT_EVERY = 8  # 1 task in 8 is read with TinyZero's whole prompt, the rest in a short view (encode)
TRAIN_ROWS, TEST_ROWS = 2000, 256  # the test tasks are distinct; the whole task space holds about 1600
CHUNK = 2048  # corpus tasks generated (and tokenized) at a time
TOKENIZER_TEXTS = 2000  # texts the BPE learns from
MAX_NEW_TOKENS = 128  # three tries with two-digit numbers take about 60 tokens, each check about 20 more
EOS = "<|im_end|>"
_TAG_RE = re.compile("|".join(re.escape(t) for t in [*TAG_TOKENS, EOS]))
# What a pretrained completion looks like once EOS is dropped: tries, then one answer.
FORMAT_RE = re.compile(r"[^<]*\n</think>\n<answer> [^<]+ </answer>")


class Example(NamedTuple):
    """One pretraining text: a TinyZero prompt and a worked completion (the loss is on the completion)."""

    prompt: str
    completion: str
    correct: bool  # whether the worked attempt's answer is right
    key: tuple[tuple[int, ...], int]  # problem_key of the task
    full: bool  # read with the whole prompt; else only its task tokens are kept (see encode)


def corpus_examples(count: int, seed: int, exclude: set) -> list[Example]:
    """Worked attempts at `count` seeded tasks outside `exclude` (held-out problem keys).

    Every FULL_PROMPT_EVERY-th is read with its whole prompt, the others in a short view (see
    encode), which makes an average example about 70 tokens instead of 170.
    """
    rng = random.Random(seed)
    examples: list[Example] = []
    # Tasks in `exclude` or without a worked solution are skipped, so draw a few more than needed.
    for row in make_countdown_rows(2 * count + 64, seed, split="pretrain", **TASK):
        key = problem_key(row)
        worked = None if key in exclude else worked_completion(row["nums"], row["target"], rng, **WORK)
        if worked is None:
            continue
        full = len(examples) % FULL_PROMPT_EVERY == 0
        examples.append(Example(row["prompt"][0]["content"], worked[0] + EOS, worked[1], key, full))
        if len(examples) == count:
            return examples
    raise RuntimeError(f"only {len(examples)} of {count} corpus tasks outside {len(exclude)} held-out problems")


def task_rows(count: int, seed: int, split: str, exclude: set, distinct: bool = False) -> list[dict[str, Any]]:
    """`count` tasks that a worked attempt can solve, none whose problem_key is in `exclude` (re-indexed 0..)."""
    rows, seen = [], set(exclude)
    for row in make_countdown_rows(count * 4, seed, split=split, **TASK):
        key = problem_key(row)
        attempts = countdown_attempts(row["nums"], WORK["max_value"], WORK["step2_ops"])
        if key in seen or not any(a.value == key[1] for a in attempts):
            continue
        if distinct:
            seen.add(key)
        row["extra_info"]["index"] = len(rows)
        rows.append(row)
        if len(rows) == count:
            return rows
    raise RuntimeError(f"only {len(rows)} of {count} {split} tasks left after excluding {len(exclude)} problems")


def tokenizer_texts(examples: list[Example]) -> list[str]:
    """Training texts for the BPE, split at the tags: those are added tokens, cut out before merging."""
    return [p for e in examples for p in _TAG_RE.split(e.prompt + e.completion) if p]


def _task_spans(prompt: str) -> list[tuple[int, int]]:
    """Character spans of a TinyZero prompt that a short view keeps: its first token, the numbers, the
    target, and the end of its last line."""
    end = prompt.rindex(".\n<think>")
    return [(0, 1), (prompt.index(" numbers ["), prompt.index(" create")),
            (prompt.index(" equals"), prompt.index(" You can use")), (end, len(prompt))]


def encode(tokenizer, examples: list[Example], prompt_cache: dict | None = None) -> list[tuple[list[int], list[int], int]]:
    """(token ids, position ids, prompt length) per example.

    Prompt and completion are tokenized apart, as RL does. A short view (full=False) keeps only the
    prompt tokens inside _task_spans (about 20 of 130) but each at its position in the whole prompt:
    with rotary positions the completion then sees the numbers and the target at the same distances
    as under the whole prompt, so what is learnt carries over to it, at a fraction of the tokens.
    `prompt_cache` (prompt text -> its ids and the short view's token indices), kept across calls, reads each
    distinct prompt once: the small task space repeats them, and they are most of the encoding time.
    """
    cache = {} if prompt_cache is None else prompt_cache
    new = list(dict.fromkeys(e.prompt for e in examples if e.prompt not in cache))
    if new:
        encoded = tokenizer(new, add_special_tokens=False, return_offsets_mapping=True)
        for prompt, ids, offsets in zip(new, encoded["input_ids"], encoded["offset_mapping"]):
            spans = _task_spans(prompt)
            short = [i for i, (start, end) in enumerate(offsets) if any(lo <= start and end <= hi for lo, hi in spans)]
            cache[prompt] = (ids, short)
    completions = tokenizer([e.completion for e in examples], add_special_tokens=False)["input_ids"]
    out = []
    for e, completion in zip(examples, completions):
        ids, short = cache[e.prompt]
        keep = list(range(len(ids))) if e.full else short
        positions = keep + list(range(len(ids), len(ids) + len(completion)))
        out.append(([ids[i] for i in keep] + completion, positions, len(keep)))
    return out


def make_batches(data: list, tokens_per_step: int, rng: random.Random) -> list[list]:
    """Group sequences of similar length into batches of at most `tokens_per_step` padded tokens, in random order."""
    batches = []
    for start in range(0, len(data), 1024):
        block = sorted(data[start:start + 1024], key=lambda d: len(d[0]))
        batch: list = []
        for item in block:
            if batch and (len(batch) + 1) * len(item[0]) > tokens_per_step:
                batches.append(batch)
                batch = []
            batch.append(item)
        if len(batch) > 1:  # a lone leftover is dropped: each of two training processes needs a sequence
            batches.append(batch)
    rng.shuffle(batches)
    return batches


def collate(batch: list[tuple[list[int], list[int], int]], pad_id: int):
    """Right-padded input ids, position ids, attention mask and labels (-100 on the prompt and the padding)."""
    import torch

    B, T = len(batch), max(len(ids) for ids, _, _ in batch)
    input_ids_BT = torch.full((B, T), pad_id, dtype=torch.long)
    position_ids_BT = torch.zeros((B, T), dtype=torch.long)
    mask_BT = torch.zeros((B, T), dtype=torch.long)
    labels_BT = torch.full((B, T), -100, dtype=torch.long)
    for i, (ids, positions, prompt_len) in enumerate(batch):
        input_ids_BT[i, :len(ids)] = torch.tensor(ids)
        position_ids_BT[i, :len(ids)] = torch.tensor(positions)
        mask_BT[i, :len(ids)] = 1
        labels_BT[i, prompt_len:len(ids)] = torch.tensor(ids[prompt_len:])
    return input_ids_BT, position_ids_BT, mask_BT, labels_BT


def pretrain(model, batches: list[list[tuple[list[int], list[int], int]]], pad_id: int, lr: float = LR,
             procs: int = 1, progress: bool = True) -> list[float]:
    """AdamW over `batches` in order, one step each (warmup, then cosine decay); returns every step's loss.

    procs=2 trains in two single-threaded processes that each take half of every batch and sum
    their gradients, so each step's update is the one a single process would make. On this shared
    2-core machine, with one core busy elsewhere, that ran as fast as one process (0.32 s/step) and
    can use the second core when it is free; two threads of one process took 3.7 s/step, as every
    op's barrier waited for the busy core.
    """
    if procs == 1:
        return _train_steps(model, batches, pad_id, lr, 0, 1, progress)
    import socket
    import tempfile

    import torch
    import torch.multiprocessing as mp

    with socket.socket() as sock:  # a free port for the process group's rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        # fork: the children start with the model and the batches in memory (nothing to pickle), and
        # the caller's __main__ need not be importable (spawn re-imports it).
        mp.start_processes(_pretrain_rank, args=(procs, port, tmp, model, batches, pad_id, lr, progress),
                           nprocs=procs, start_method="fork")
        model.load_state_dict(torch.load(Path(tmp) / "model.pt"))
        return json.loads((Path(tmp) / "losses.json").read_text())


def _pretrain_rank(rank: int, procs: int, port: int, tmp: str, model, batches, pad_id, lr, progress):
    """One process of pretrain(procs > 1); rank 0 leaves the trained weights and the losses in `tmp`."""
    import torch
    import torch.distributed as dist

    from grpo.device import init_host_group

    torch.set_num_threads(1)
    init_host_group(rank, procs, port)
    try:
        losses = _train_steps(model, batches, pad_id, lr, rank, procs, progress and rank == 0)
        if rank == 0:
            torch.save(model.state_dict(), Path(tmp) / "model.pt")
            (Path(tmp) / "losses.json").write_text(json.dumps(losses))
    finally:
        dist.destroy_process_group()


def _train_steps(model, batches, pad_id: int, lr: float, rank: int, procs: int, progress: bool):
    """The training loop; with procs > 1 this rank takes every procs-th sequence of each batch."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    if procs > 1:
        import torch.distributed as dist
    steps = len(batches)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)

    def lr_factor(step: int) -> float:  # linear warmup, then cosine down to MIN_LR_FRACTION
        if step < WARMUP:
            return (step + 1) / WARMUP
        t = (step - WARMUP) / max(1, steps - WARMUP)
        return MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    params = list(model.parameters())
    model.train()
    losses = []
    bar = tqdm(batches, desc="pretrain", unit="step", disable=not progress, mininterval=2.0)
    for batch in bar:
        input_ids_BT, position_ids_BT, mask_BT, labels_BT = collate(batch[rank::procs], pad_id)
        # The mask is needed even with right padding: without one, transformers reads the jumps in a
        # short view's positions as boundaries of packed sequences and cuts attention there.
        logits_BTV = model(input_ids=input_ids_BT, position_ids=position_ids_BT, attention_mask=mask_BT).logits
        loss_sum = F.cross_entropy(logits_BTV[:, :-1].flatten(0, 1).float(), labels_BT[:, 1:].flatten(),
                                   ignore_index=-100, reduction="sum")
        # Normalised by the whole batch's token count, so summed gradients equal one process's mean.
        stats = torch.tensor([loss_sum.item(), float((labels_BT[:, 1:] != -100).sum())])
        if procs > 1:
            dist.all_reduce(stats)
        (loss_sum / stats[1]).backward()
        if procs > 1:
            flat = torch.cat([p.grad.flatten() for p in params])
            dist.all_reduce(flat)
            torch.nn.utils.vector_to_parameters(flat, [p.grad for p in params])
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=False)
        losses.append(float(stats[0] / stats[1]))
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}", refresh=False)
    model.eval()
    return losses


def evaluate(model_dir: Path, tokenizer, rows: list[dict[str, Any]], n: int, greedy: bool, seed: int = 0,
             max_new_tokens: int = MAX_NEW_TOKENS) -> dict[str, float]:
    """Accuracy, format rate, pass@n and mean length of `n` completions per task, with the real rollout engine.

    Greedy is top_k=1; otherwise temperature 1, as GRPO samples. No stop string: a well-formed
    completion must end with EOS by itself.
    """
    import torch

    from grpo.device import HOST
    from grpo.rewards.countdown import score_countdown
    from grpo.rollout.hf import HFRolloutEngine
    from grpo.types import SamplingSettings

    engine = HFRolloutEngine(str(model_dir), torch.float32, HOST, tokenizer)
    prompts = [tokenizer(r["prompt"][0]["content"], add_special_tokens=False)["input_ids"] for r in rows]
    settings = SamplingSettings(n=n, temperature=1.0, top_k=1 if greedy else 0, max_new_tokens=max_new_tokens,
                                seed=seed)
    groups = engine.generate(prompts, settings)
    correct = formatted = length = solved = 0
    for row, group in zip(rows, groups):
        hits = [score_countdown(c.text, row["reward_model"]["ground_truth"]).components["accuracy"] for c in group]
        correct += sum(hits)
        solved += any(hits)
        formatted += sum(c.finish_reason == "stop" and bool(FORMAT_RE.fullmatch(c.text)) for c in group)
        length += sum(len(c.token_ids) for c in group)
    total = len(rows) * n
    return {"accuracy": correct / total, "format_rate": formatted / total, f"pass@{n}": solved / len(rows),
            "mean_length": length / total}


def steps_for(minutes: float) -> int:
    """--minutes as pretraining steps (STEPS_PER_MINUTE each), at least one."""
    return max(1, round(minutes * STEPS_PER_MINUTE))


def build(out: Path, minutes: float, seed: int, procs: int = 2, progress: bool = True) -> dict[str, Any]:
    """Everything main() does after the cache check; returns what build.json holds."""
    import shutil

    from transformers import AutoTokenizer

    start = time.perf_counter()
    steps = steps_for(minutes)
    # The test tasks are drawn first and held out of everything else: a fair sample of the task
    # distribution that neither pretraining nor RL ever sees (small numbers make a small task space).
    test_rows = task_rows(TEST_ROWS, seed + 2, "test", exclude=set(), distinct=True)
    test_keys = {problem_key(r) for r in test_rows}
    train_rows = task_rows(TRAIN_ROWS, seed + 1, "train", exclude=test_keys)
    tokenizer, rng = None, random.Random(seed)
    batches, corpus_keys, tasks, correct, prompt_cache = [], set(), 0, 0, {}
    while len(batches) < steps:  # a chunk at a time, so a short build generates a short corpus
        examples = corpus_examples(CHUNK, seed * 1000 + len(batches), exclude=test_keys)
        if tokenizer is None:
            tokenizer = build_tokenizer(tokenizer_texts(examples[:TOKENIZER_TEXTS]), qwen2_split=True)
        batches += make_batches(encode(tokenizer, examples, prompt_cache), TOKENS_PER_STEP, rng)
        tasks += len(examples)
        correct += sum(e.correct for e in examples)
        corpus_keys |= {e.key for e in examples}
    batches = batches[:steps]
    model = build_model(tokenizer, seed, **MODEL)
    prepared = time.perf_counter() - start
    losses = pretrain(model, batches, tokenizer.pad_token_id, procs=procs, progress=progress)
    trained = time.perf_counter() - start - prepared

    # Written under model.partial and renamed last: OUT/model/config.json then means a finished build.
    partial, model_dir = out / "model.partial", out / "model"
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer.save_pretrained(partial)
    model.save_pretrained(partial)
    loaded = AutoTokenizer.from_pretrained(partial)  # what the trainer and the engines will use
    sample = test_rows[0]["prompt"][0]["content"] + examples[0].completion
    if loaded(sample)["input_ids"] != tokenizer(sample)["input_ids"]:
        raise RuntimeError(f"{partial}: AutoTokenizer tokenizes differently from the tokenizer trained here")
    greedy = evaluate(partial, loaded, test_rows, n=1, greedy=True)
    sampled = evaluate(partial, loaded, test_rows, n=8, greedy=False, seed=seed)
    info = {
        "seed": seed, "steps": steps, "tokens_per_step": TOKENS_PER_STEP, "lr": LR, "task": TASK, "work": WORK,
        "model": MODEL, "parameters": sum(p.numel() for p in model.parameters()), "vocab": len(tokenizer),
        "corpus_tasks": tasks, "corpus_correct": correct / max(1, tasks),
        "train_rows": len(train_rows), "test_rows": len(test_rows),
        "test_in_corpus_or_train": len(test_keys & (corpus_keys | {problem_key(r) for r in train_rows})),
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "minutes": {"prepare": prepared / 60, "pretrain": trained / 60,
                    "total": (time.perf_counter() - start) / 60},
        "test_greedy": greedy, "test_sampled_t1_n8": sampled, "max_new_tokens": MAX_NEW_TOKENS, "procs": procs,
    }
    write_parquet(train_rows, out / "countdown_train.parquet")
    write_parquet(test_rows, out / "countdown_test.parquet")
    (out / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(model_dir, ignore_errors=True)
    partial.rename(model_dir)
    print(f"wrote {model_dir} ({info['parameters']:,} parameters, vocab {info['vocab']}), "
          f"countdown_train.parquet ({len(train_rows)} tasks), countdown_test.parquet ({len(test_rows)}) in {out}")
    return info


def _stale_settings(out: Path, args) -> list[str]:
    """The build settings that OUT/build.json records differently from this script's and `args` (all if unreadable)."""
    current = {"seed": args.seed, "steps": steps_for(args.minutes), "lr": LR,
               "tokens_per_step": TOKENS_PER_STEP, "task": TASK, "work": WORK, "model": MODEL}
    try:
        built = json.loads((out / "build.json").read_text())
    except (OSError, ValueError):
        return ["no readable build.json"]
    current = json.loads(json.dumps(current))  # tuples become lists, as in the file
    return [key for key, value in current.items() if built.get(key) != value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(".cache/base"), help="output folder")
    parser.add_argument("--minutes", type=float, default=6.5,
                        help=f"training length: minutes x {STEPS_PER_MINUTE} steps (about that many minutes here)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the corpus, the weights and the task files")
    parser.add_argument("--procs", type=int, default=2, help="training processes, one thread each (one per core)")
    parser.add_argument("--force", action="store_true", help="rebuild even if OUT/model/config.json exists")
    args = parser.parse_args(argv)
    if (args.out / "model" / "config.json").exists() and not args.force:
        stale = _stale_settings(args.out, args)
        if not stale:
            print(f"reusing {args.out} (model/config.json exists; pass --force to rebuild)")
            return 0
        print(f"rebuilding {args.out}: it was built with other settings ({', '.join(stale)})")
    import torch

    torch.set_num_threads(1)  # see pretrain(): a process per core beats threads on a shared machine
    info = build(args.out, args.minutes, args.seed, args.procs)
    g, s = info["test_greedy"], info["test_sampled_t1_n8"]
    print(f"{info['steps']} steps in {info['minutes']['total']:.1f} min, final loss {info['final_loss']:.3f}; "
          f"test greedy accuracy {g['accuracy']:.1%} (format {g['format_rate']:.1%}), sampled T=1 accuracy "
          f"{s['accuracy']:.1%}, pass@8 {s['pass@8']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
