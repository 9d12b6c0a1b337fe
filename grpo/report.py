"""The end-of-run report: LOG_DIR/report.md with PNG plots of the training curves and the eval table.

It opens with one figure (accuracy, response length and reflection against step) and the greedy
completions of one held-out prompt before and after training. Reads only the run directory
(metrics.jsonl, eval.json, eval_samples.jsonl), so it can also be regenerated afterwards:
`python -c "import grpo.report as r; r.write_report('runs/x')"`.
"""
from __future__ import annotations

import json
from pathlib import Path

# (metric key, plot title); curves the R1-Zero write-ups watch, plus the usual health signals
CURVES = [("reward/mean", "reward"), ("reward/accuracy", "accuracy"), ("response/length_mean", "response length"),
          ("loss/kl", "KL to reference"), ("policy/entropy", "entropy"), ("response/reflection_rate", "reflection words")]


def _read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def plot_curves(rows: list[dict], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on training machines
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key, title in CURVES:
        points = [(r["step"], r[key]) for r in rows if key in r]
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
        ax.plot(*zip(*points), marker="." if len(points) < 50 else None)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / (key.replace("/", "_") + ".png")
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing mean over `window` points (as many as there are at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_signature(rows: list[dict], evals: dict[str, dict[str, float]], out_dir: Path) -> Path | None:
    """The one figure to look at first: accuracy (training samples, and held-out greedy pass@1 at each
    evaluation), mean response length and the share of responses with reflection words (a retry after
    "wait", a "verify"), against step, stacked on one page. R1-Zero's three curves: reward up, responses longer, reflection appearing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return None
    steps = [r["step"] for r in rows]
    window = max(1, len(rows) // 20)
    fig, axes = plt.subplots(3, 1, figsize=(7, 8), dpi=100, sharex=True)
    panels = [("reward/accuracy", "accuracy", axes[0]), ("response/length_mean", "response length (tokens)", axes[1]),
              ("response/reflection_rate", "responses with reflection words (share)", axes[2])]
    for key, title, ax in panels:
        values = [r.get(key, float("nan")) for r in rows]
        ax.plot(steps, values, color="0.75", linewidth=0.8, label="per step")
        ax.plot(steps, _smooth(values, window), color="C0", label=f"mean of {window} steps")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    held_out = sorted((int(label.split()[-1]), value) for label, results in evals.items()
                      for key, value in results.items() if key.endswith("/pass@1"))
    if held_out:
        axes[0].plot(*zip(*held_out), "o-", color="C3", label="held-out, greedy pass@1")
    axes[0].legend(fontsize=8, loc="upper left")
    axes[-1].set_xlabel("step")
    fig.suptitle("accuracy, response length and reflection against step")
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "signature.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def before_after(run_dir: Path) -> tuple[dict, dict] | None:
    """The greedy completions of one held-out prompt at the first and the last evaluation (eval_samples.jsonl):
    the first prompt that training turned from wrong to right, else the first whose verdict changed, else the
    first prompt."""
    path = run_dir / "eval_samples.jsonl"
    if not path.exists():
        return None
    samples = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not samples:
        return None
    first, last = min(s["step"] for s in samples), max(s["step"] for s in samples)
    if first == last:
        return None
    at = lambda step: {(s["benchmark"], s["index"]): s for s in samples if s["step"] == step}  # noqa: E731
    before, after = at(first), at(last)
    shared = [key for key in before if key in after]
    if not shared:
        return None
    fixed = (k for k in shared if not before[k]["correct"] and after[k]["correct"])
    changed = (k for k in shared if before[k]["correct"] != after[k]["correct"])
    key = next(fixed, next(changed, shared[0]))
    return before[key], after[key]


def eval_table(results: dict[str, float]) -> list[str]:
    """Markdown table of `eval/<benchmark>/<metric>` values: a row per benchmark, a column per metric."""
    table: dict[str, dict[str, float]] = {}
    for key, value in results.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "eval":
            table.setdefault(parts[1], {})[parts[2]] = value
    if not table:
        return []
    is_rate = lambda column: "@" in column  # pass@1, avg@k, maj@k, pass@k are fractions; n and length are not
    columns = sorted({c for row in table.values() for c in row}, key=lambda c: (is_rate(c), c))
    lines = ["| benchmark | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in sorted(table.items()):
        cells = ["" if c not in row else f"{100 * row[c]:.1f}" if is_rate(c) else f"{row[c]:.4g}" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def write_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    rows = _read_metrics(run_dir)
    plots = plot_curves(rows, run_dir / "plots")
    eval_path = run_dir / "eval.json"
    evals = json.loads(eval_path.read_text()) if eval_path.exists() else {}
    signature = plot_signature(rows, evals, run_dir / "plots")
    lines = [f"# Run report: {run_dir.name}", ""]
    if signature is not None:
        lines += [f"![accuracy, response length and reflection against step](plots/{signature.name})", ""]
    pair = before_after(run_dir)
    if pair is not None:
        before, after = pair
        lines += [f"## One held-out prompt, greedy, at step {before['step']} and step {after['step']}", "",
                  f"{before['benchmark']} #{before['index']}, ground truth `{before['ground_truth']}`", ""]
        for sample in (before, after):
            verdict = "right" if sample["correct"] else "wrong"
            lines += [f"step {sample['step']} ({verdict}):", "", "```", sample["response"].strip(), "```", ""]
    if rows:
        first, last = rows[0], rows[-1]
        lines += [f"{len(rows)} steps logged (last: step {last['step']}).", "",
                  "| metric | first step | last step |", "|---|---|---|"]
        for key, title in CURVES:
            if key in first and key in last:
                lines.append(f"| {title} | {first[key]:.4g} | {last[key]:.4g} |")
        lines.append("")
    if evals:
        for label, results in evals.items():
            table = eval_table(results)
            if table:
                lines += [f"## Evaluation: {label} (rates in percent)", "", *table, ""]
    lines += [f"![{p.stem}](plots/{p.name})" for p in plots]
    out = run_dir / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out
