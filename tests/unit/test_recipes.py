"""Every shipped recipe loads and finalises for the world size its own launch command names,
and every algorithm recipe stacks on the task recipe; nothing is started.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from grpo.recipe import load_config

REPO = Path(__file__).resolve().parents[2]
TASK_RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
ALGORITHM_RECIPES = sorted((REPO / "recipes" / "algorithms").glob("*.yaml"))


def world_size_of(recipe: Path) -> int:
    """nnodes x nproc_per_node from the torchrun (or multinode.sh) command in the recipe's header."""
    header = "".join(line for line in recipe.read_text().splitlines(keepends=True) if line.startswith("#"))
    if "multinode.sh" in header:
        nodes = int(re.search(r"(\d+) nodes", header).group(1))
        gpus = int(re.search(r"(\d+) GPUs", header).group(1))
        return gpus if gpus >= nodes else nodes * gpus
    match = re.search(r"--nproc_per_node (\d+)", header)
    assert match, f"{recipe.name}: its header must show the launch command"
    return int(match.group(1))


@pytest.mark.parametrize("recipe", TASK_RECIPES, ids=lambda p: p.name)
def test_task_recipe_finalises_for_its_world_size(recipe):
    cfg = load_config(recipe).finalize(world_size_of(recipe))
    assert cfg.derived.samples_per_rank == cfg.derived.prompts_per_rank * cfg.rollout.n


@pytest.mark.parametrize("recipe", ALGORITHM_RECIPES, ids=lambda p: p.name)
def test_algorithm_recipe_stacks_on_the_tiny_recipe(recipe):
    cfg = load_config([REPO / "recipes" / "countdown_tiny.yaml", recipe]).finalize(2)
    assert cfg.source.endswith(str(recipe))


def test_world_sizes_read_from_headers():
    # 32B: 16 GPUs over 2 nodes; 3B: TinyZero's 2 GPUs; 7B and 1.5B: one node of 8
    sizes = {p.name: world_size_of(p) for p in TASK_RECIPES}
    assert sizes["r1zero_qwen25_32b_deepscaler.yaml"] == 16
    assert sizes["countdown_qwen25_3b.yaml"] == 2
    assert sizes["r1zero_qwen25_7b_deepscaler.yaml"] == 8
