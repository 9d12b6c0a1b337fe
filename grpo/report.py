"""The end-of-run report: LOG_DIR/report.md with PNG plots of the training curves and the eval table.

Reads only the run directory (metrics.jsonl, eval.json), so it can also be regenerated afterwards:
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
    lines = [f"# Run report: {run_dir.name}", ""]
    if rows:
        first, last = rows[0], rows[-1]
        lines += [f"{len(rows)} steps logged (last: step {last['step']}).", "",
                  "| metric | first step | last step |", "|---|---|---|"]
        for key, title in CURVES:
            if key in first and key in last:
                lines.append(f"| {title} | {first[key]:.4g} | {last[key]:.4g} |")
        lines.append("")
    eval_path = run_dir / "eval.json"
    if eval_path.exists():
        evals = json.loads(eval_path.read_text())
        for label, results in evals.items():
            table = eval_table(results)
            if table:
                lines += [f"## Evaluation: {label} (rates in percent)", "", *table, ""]
    lines += [f"![{p.stem}](plots/{p.name})" for p in plots]
    out = run_dir / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out
