"""Train from a recipe: `torchrun --nproc_per_node G launch/run.py recipes/X.yaml key.sub=value ...`.

Also runs as a plain `python launch/run.py ...` (one process, world size 1). Mistakes in the recipe,
the overrides, the model path or the data files print one clear message and exit with code 2; a run
that cannot go on (a stalled rank, updates that stay non-finite) prints what happened and where, and
exits with code 3.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

USAGE = "usage: launch/run.py RECIPE.yaml [MORE.yaml ...] [section.key=value ...]   (later recipes win)"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        print("Every key, its default and its meaning: see the README's configuration table or grpo/config.py.")
        return 0 if argv else 2
    from grpo.recipe import load_config
    from grpo.errors import RunFailed, UserError

    try:
        recipes = [a for a in argv if "=" not in a]
        cfg = load_config(recipes, [a for a in argv if "=" in a])
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        # mistakes surface before any heavy import: first whether the checkpoint to resume fits this world size
        # (then a batch that does not divide is a resume problem, not a config one), then the config itself
        from grpo.checkpoint import checkpoint_to_resume

        checkpoint_to_resume(cfg.log.dir, cfg.checkpoint.resume, world_size, cfg.train.prompts_per_step)
        cfg.finalize(world_size)
        from grpo.trainer import Trainer

        Trainer(cfg).fit()
    except (UserError, RunFailed) as e:
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
