"""Prepare a data set for training: `python launch/prepare_data.py recipes/datasets/NAME.yaml [options]`.

Reads the dataset config's source (a hub id through `datasets.load_dataset`, or a local
jsonl/json/parquet/csv file given with --source), maps its field names onto ours, turns each row
into a verl/TinyZero row and writes OUT/SPLIT.parquet; or runs the config's task generator. Prints
per split: rows in, rows kept, why the rest were dropped, and prompt length percentiles (tokens with
--tokenizer, characters without). Examples:

    python launch/prepare_data.py recipes/datasets/gsm8k.yaml --out data/gsm8k
    python launch/prepare_data.py recipes/datasets/math500.yaml --source test.jsonl --tokenizer Qwen/Qwen2.5-7B
    python launch/prepare_data.py recipes/datasets/mine.yaml --map-keys '{"prompt": "q", "answer": "a"}'
    python launch/prepare_data.py recipes/datasets/countdown.yaml --generate --count 2000
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def _rows(text: str) -> list[int | None]:
    """'A:B' -> [A, B]; either side may be empty (':1024', '327680:')."""
    start, sep, stop = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return [int(start) if start else 0, int(stop) if stop else None]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rows takes START:STOP (e.g. 0:1000 or 100:), got {text!r}") from None


def _map_keys(text: str) -> dict[str, str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"--map-keys must be JSON, e.g. '{{\"prompt\": \"problem\"}}' ({e})") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise argparse.ArgumentTypeError(f"--map-keys must be a JSON object of our field -> source field, got {text}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[2:]))
    p.add_argument("config", help="dataset config YAML (recipes/datasets/*.yaml)")
    p.add_argument("--source", help="hub id or local file replacing the config's source (a file is one split: see --split)")
    p.add_argument("--split", help="prepare only this output split of the config (train, test, ...)")
    p.add_argument("--rows", type=_rows, help="START:STOP slice of the source split")
    p.add_argument("--map-keys", type=_map_keys, help='JSON, our field -> source field, e.g. \'{"prompt": "problem"}\'')
    p.add_argument("--handler", help="row handler: math, gsm8k, countdown, gpqa or package.module:function")
    p.add_argument("--skip-malformed", action="store_true", default=None, help="skip rows that cannot be used (counted)")
    p.add_argument("--generate", action="store_true", help="use the config's task generator even if it names a source")
    p.add_argument("--count", type=int, help="generator: rows per split")
    p.add_argument("--seed", type=int, help="generator: seed of every split")
    p.add_argument("--out", help="output folder (default: the config's out, else data/NAME)")
    p.add_argument("--tokenizer", help="tokenizer (local folder or hub id) to measure prompts in tokens")
    p.add_argument("--template", help="template to measure prompts with (default: the config's)")
    p.add_argument("--templates-file", help="JSON file of extra templates (data.templates_file)")
    p.add_argument("--max-prompt-length", type=int, help="also count prompts longer than this many tokens")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from grpo.data import write_parquet
    from grpo.data.dataset_config import load_dataset_config
    from grpo.data.loader import load_tokenizer
    from grpo.data.prepare import apply_overrides, prepare, prompt_lengths, summary_lines
    from grpo.errors import UserError
    from grpo.templates import CHAT, load_user_templates

    try:
        cfg = apply_overrides(load_dataset_config(args.config), source=args.source, rows=args.rows, split=args.split,
                              map_keys=args.map_keys, handler=args.handler, skip_malformed=args.skip_malformed,
                              count=args.count, seed=args.seed)
        template = args.template or cfg.template
        templates = load_user_templates(args.templates_file) if args.templates_file else None
        tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
        out = Path(args.out or cfg.out or f"data/{cfg.name}")
        progress = not args.no_progress
        unit = f"tokens ({args.tokenizer})" if tokenizer else "characters (no --tokenizer given, so not tokens)"
        measured = template
        if template == CHAT and tokenizer is None:  # only the tokenizer can render chat: measure the bare question
            measured, unit = "raw", "characters of the bare question (template chat needs --tokenizer to render)"
        print(f"{cfg.name}: {args.config}", flush=True)
        train_file = None
        for split in prepare(cfg, generate=args.generate, progress=progress):
            lengths = prompt_lengths(split.rows, measured, tokenizer, templates, progress)
            path = write_parquet(split.rows, out / f"{split.split}.parquet")
            train_file = path if split.split == "train" else train_file
            for line in summary_lines(split, lengths, unit, measured, args.max_prompt_length):
                print(line)
            print(f"  wrote {path}", flush=True)
        if train_file is not None:
            print(f"train with: data.train_files=[{train_file}] data.template={template}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
