"""`make demo`: R1-Zero in miniature on a laptop-class CPU, with no downloads.

Builds (or reuses) the tiny Countdown base model (launch/build_base.py), trains it with GRPO under
`torchrun --nproc_per_node 2` with recipes/countdown_tiny.yaml, which evaluates greedy accuracy on
the held-out Countdown problems before the first step and after the last, then prints the
before/after table and writes RUN_DIR/summary.json: accuracy_before, accuracy_after, minutes, and
R1-Zero's other two signs, response_length and reflection_rate (the share of responses with reflection
words: a retry after "wait", a "verify") over the first and the last 20 steps, reflection_pays (the
answer accuracy of those responses and of the rest over the last 20 steps), after_a_miss (from the
held-out samples before and after training: how often a response whose first try misses tries again, and how
often those that do and those that stop are right), one held-out prompt's greedy completions before and after
(example), and base (the base model's seed, steps and final loss). RUN_DIR/report.md opens with the figure
of all three against step.

    python launch/demo.py [--run-dir runs/demo] [--base-seed N] [--base-minutes M] [section.key=value ...]

Overrides go to the recipe; --base-seed and --base-minutes go to build_base.py's --seed and --minutes (a
cached base built with other settings is rebuilt), to see how much the run depends on the base it starts from.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # grpo from this checkout, installed or not
from grpo.device import HOST_ACCELERATOR  # noqa: E402  (the demo runs on the host, whatever accelerator is there)

REPO = Path(__file__).resolve().parents[1]
RECIPE = "recipes/countdown_tiny.yaml"
BENCHMARK = "countdown_test"  # the stem of eval.files in the recipe
SIGNATURE_STEPS = 20  # response length and re-checking compared over the first and the last this many steps


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument("--base-seed", type=int, help="build_base.py --seed (default: its own)")
    parser.add_argument("--base-minutes", type=float, help="build_base.py --minutes (default: its own)")
    parser.add_argument("overrides", nargs="*", help="section.key=value for the recipe")
    args = parser.parse_args(argv)
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR=os.environ.get("DS_ACCELERATOR", HOST_ACCELERATOR),
               HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore::FutureWarning", TOKENIZERS_PARALLELISM="false")
    start = time.time()
    built = subprocess.run(base_command(args.base_seed, args.base_minutes), cwd=REPO, env=env)
    if built.returncode != 0:
        print(f"demo: building the base model failed with exit code {built.returncode} (output above)", file=sys.stderr)
        return built.returncode
    run_dir = REPO / args.run_dir
    shutil.rmtree(run_dir, ignore_errors=True)  # a demo starts fresh rather than resuming an old one
    train_args = ["launch/run.py", RECIPE, f"log.dir={args.run_dir}", *args.overrides]
    print(f"training with GRPO: torchrun --nproc_per_node 2 {' '.join(train_args)}", flush=True)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *train_args], cwd=REPO, env=env)
    if done.returncode != 0:
        print(f"demo: training failed with exit code {done.returncode} (output above)", file=sys.stderr)
        return done.returncode
    minutes = (time.time() - start) / 60
    evals_path = run_dir / "eval.json"
    summary = summarize(json.loads(evals_path.read_text()) if evals_path.exists() else {}, minutes)
    summary.update(signature(run_dir))
    build = REPO / ".cache" / "base" / "build.json"
    if build.exists():  # which base this run started from: results depend on it (README)
        info = json.loads(build.read_text())
        summary["base"] = {key: info.get(key) for key in ("seed", "steps", "final_loss")}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nheld-out Countdown, {summary['problems']} problems (step 0 -> step {summary['steps']}):")
    print(before_after_table(summary))
    if "response_length" in summary:
        length, checks = summary["response_length"], summary["reflection_rate"]
        print(f"\ntraining samples, mean of the first {SIGNATURE_STEPS} steps -> the last {SIGNATURE_STEPS}: response "
              f"length {length['first']:.1f} -> {length['last']:.1f} tokens ({100 * length['change']:+.0f}%), "
              f"responses with reflection words {100 * checks['first']:.1f}% -> {100 * checks['last']:.1f}%")
        pays = summary.get("reflection_pays", {})
        if pays.get("with") is not None and pays.get("without") is not None:
            print(f"over the last {pays['steps']} steps, responses with reflection words were right "
                  f"{100 * pays['with']:.1f}% of the time, the others {100 * pays['without']:.1f}%")
    for when, miss in summary.get("after_a_miss", {}).items():
        if miss["went_on"] is not None:
            going_on, stopping = (f"{100 * miss[k]:.1f}%" if miss[k] is not None else "-"
                                  for k in ("right_going_on", "right_stopping"))
            print(f"held-out samples {when} training: after a missed first try {100 * miss['went_on']:.0f}% try again "
                  f"and are right {going_on} of the time; those that stop are right {stopping}")
    print(f"\n{minutes:.1f} minutes; summary: {run_dir / 'summary.json'}; report: {run_dir / 'report.md'}; "
          f"curves: tensorboard --logdir {args.run_dir}")
    return 0


def base_command(seed: int | None, minutes: float | None) -> list[str]:
    """build_base.py's command line: its own defaults unless --base-seed or --base-minutes were given."""
    command = [sys.executable, "launch/build_base.py", "--out", ".cache/base"]
    if seed is not None:
        command += ["--seed", str(seed)]
    if minutes is not None:
        command += ["--minutes", str(minutes)]
    return command


def summarize(evals: dict[str, dict[str, float]], minutes: float) -> dict:
    """summary.json from the run's eval.json ({"step N": metrics}): greedy pass@1 at the first and last step."""
    labels = sorted(evals, key=lambda label: int(label.split()[-1]))
    if len(labels) < 2:
        raise SystemExit(f"demo: eval.json holds {labels}; the recipe must evaluate at the start and at the end")
    before, after = evals[labels[0]], evals[labels[-1]]
    key = f"eval/{BENCHMARK}/pass@1"
    return {"accuracy_before": before[key], "accuracy_after": after[key], "minutes": round(minutes, 2),
            "problems": int(after[f"eval/{BENCHMARK}/n"]), "steps": int(labels[-1].split()[-1]),
            "before": before, "after": after}


def signature(run_dir: Path) -> dict:
    """R1-Zero's other two curves, from metrics.jsonl: mean response length and the share of responses with
    reflection words (grpo.metrics.REFLECTION_WORDS), over the first and the last SIGNATURE_STEPS steps; and the
    greedy completions of one held-out prompt before and after (grpo.report.before_after)."""
    from grpo.report import before_after

    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    out: dict = {}
    if len(rows) >= 2 * SIGNATURE_STEPS:
        for key, name in (("response/length_mean", "response_length"), ("response/reflection_rate", "reflection_rate"),
                          ("reward/accuracy", "train_accuracy")):
            first = sum(r[key] for r in rows[:SIGNATURE_STEPS]) / SIGNATURE_STEPS
            last = sum(r[key] for r in rows[-SIGNATURE_STEPS:]) / SIGNATURE_STEPS
            out[name] = {"first": first, "last": last, "change": (last - first) / first if first else None,
                         "steps": SIGNATURE_STEPS}
        out["reflection_pays"] = reflection_pays(rows[-SIGNATURE_STEPS:])
    path = run_dir / "eval_completions.jsonl"
    if path.exists():
        completions = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        steps = sorted({c["step"] for c in completions})
        if len(steps) >= 2:
            out["after_a_miss"] = {"before": after_a_miss([c for c in completions if c["step"] == steps[0]]),
                                   "after": after_a_miss([c for c in completions if c["step"] == steps[-1]])}
    pair = before_after(run_dir)
    if pair is not None:
        out["example"] = {"before": pair[0], "after": pair[1]}
    return out


def reflection_pays(rows: list[dict]) -> dict:
    """Answer accuracy of the responses with reflection words and of the rest, pooled over `rows` (steps of
    equal size): each step's accuracy weighted by how many of its responses fell on that side. None for a
    side no response fell on."""
    sides = {"with": ("response/reflective_accuracy", lambda rate: rate),
             "without": ("response/plain_accuracy", lambda rate: 1.0 - rate)}
    out: dict = {"steps": len(rows)}
    for side, (key, weight_of) in sides.items():
        weights = [weight_of(r.get("response/reflection_rate", 0.0)) for r in rows]
        total = sum(w for w, r in zip(weights, rows) if key in r)
        out[side] = sum(w * r[key] for w, r in zip(weights, rows) if key in r) / total if total else None
    return out


def after_a_miss(completions: list[dict]) -> dict:
    """Whether going on after a missed first try pays, from one evaluation's sampled Countdown completions
    (eval_completions.jsonl rows of BENCHMARK): of the responses whose first worked line misses the target
    (grpo.rewards.countdown.first_try), the share that try again, and the answer accuracy of those that do and
    of those that stop. Unlike reflection_pays, both sides start from the same place, a miss. None for an
    empty side."""
    from grpo.rewards.countdown import parse_ground_truth, first_try

    sampled = [c for c in completions if c["benchmark"] == BENCHMARK and c["sample"] != "greedy"]
    missed = []
    for c in sampled:
        outcome = first_try(c["response"], parse_ground_truth(c["ground_truth"])[1])
        if outcome is not None and not outcome.reached_target:
            missed.append((outcome.went_on, c["correct"]))
    going_on = [correct for went_on, correct in missed if went_on]
    stopping = [correct for went_on, correct in missed if not went_on]
    rate = lambda part, whole: len(part) / len(whole) if whole else None  # noqa: E731
    return {"responses": len(sampled), "first_try_missed": rate(missed, sampled), "went_on": rate(going_on, missed),
            "right_going_on": sum(going_on) / len(going_on) if going_on else None,
            "right_stopping": sum(stopping) / len(stopping) if stopping else None}


def before_after_table(summary: dict) -> str:
    """pass@1 (greedy) and the sampled metrics, before and after, in percent."""
    rows = [f"{'metric':<22} {'before':>8} {'after':>8}"]
    names = {"pass@1": "pass@1 (greedy)", "avg@4": "avg@4 (4 samples)", "maj@4": "maj@4", "pass@4": "pass@4",
             "length": "length (tokens)"}
    for metric, label in names.items():
        name = f"eval/{BENCHMARK}/{metric}"
        if name in summary["before"] and name in summary["after"]:
            scale, unit = (1, "") if metric == "length" else (100, "%")
            rows.append(f"{label:<22} {scale * summary['before'][name]:>7.1f}{unit or ' '} "
                        f"{scale * summary['after'][name]:>7.1f}{unit}")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
