"""Export a training checkpoint as a Hugging Face folder that transformers and vLLM load directly.

    python launch/export.py runs/x/checkpoints/step_00000040 runs/x/export [--dtype float32|bfloat16] [--merge]

One process, no GPU needed: ZeRO shards are merged with DeepSpeed's converter. A LoRA run's checkpoint
is written as a peft adapter folder (peft and vLLM load it on the base model), or with --merge as the
whole model with the adapter merged in. The final policy of a run is already exported to LOG_DIR/final
when the run ends (checkpoint.save_final; with LoRA merged, its adapter in LOG_DIR/final/adapter).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a LOG_DIR/checkpoints/step_... folder")
    parser.add_argument("out", help="folder to write (safetensors, config.json, tokenizer)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="default: the run's model.dtype")
    parser.add_argument("--merge", action="store_true", help="LoRA: write the whole model with the adapter merged in")
    args = parser.parse_args(argv)
    from grpo.checkpoint import export_checkpoint
    from grpo.errors import UserError

    try:
        out = export_checkpoint(args.checkpoint, args.out, args.dtype, args.merge)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"exported {args.checkpoint} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
