"""The trainer state of a checkpoint on another number of ranks (grpo/checkpoint.py): which rank's file each rank
reads, what is dropped, and the check that a world size can take the saved global batch. The files are written
with torch.save in the layout `save_checkpoint` uses (trainer_state_rank{R}.pt)."""
from __future__ import annotations

import pytest
import torch

from grpo.checkpoint import check_resume_world_size, checkpoint_to_resume, read_rank_state, saved_world_size
from grpo.errors import UserError


def saved_by(folder, world_size, step=2, offset=16):
    """A checkpoint folder as `world_size` ranks leave it: the same step and cursor, each rank its own RNG state."""
    (folder / "policy").mkdir(parents=True)
    for rank in range(world_size):
        torch.save({"step": step, "sampler": {"epoch": 0, "offset": offset}, "rng": {"rank": rank},
                    "world_size": world_size}, folder / f"trainer_state_rank{rank}.pt")
    return folder


def test_the_same_world_size_reads_each_ranks_own_state(tmp_path):
    path = saved_by(tmp_path / "step", 2)
    assert [read_rank_state(path, rank, 2)["rng"] for rank in range(2)] == [{"rank": 0}, {"rank": 1}]


@pytest.mark.parametrize("saved, resumed", [(2, 1), (1, 2), (2, 4)])
def test_another_world_size_reads_the_global_step_and_cursor_and_no_rng(tmp_path, saved, resumed):
    path = saved_by(tmp_path / "step", saved)
    for rank in range(resumed):
        state = read_rank_state(path, rank, resumed)
        # step and cursor are global (any rank's copy serves); RNG states of the old ranks are not handed out
        assert (state["step"], state["sampler"], state["rng"]) == (2, {"epoch": 0, "offset": 16}, None)
        assert state["world_size"] == saved  # so the trainer knows it resharded


def test_a_world_size_that_cannot_split_the_global_batch_is_refused(tmp_path):
    path = saved_by(tmp_path / "step", 2)
    assert saved_world_size(path) == 2
    # 8 prompts: 1, 2, 4 or 8 ranks take 8, 4, 2 or 1 each; 3 ranks would take 8 / 3
    for ranks in (1, 2, 4, 8):
        check_resume_world_size(path, ranks, prompts_per_step=8)
    with pytest.raises(UserError, match=r"saved by 2 ranks and this run has 3: .*train.prompts_per_step=8 .*"
                                        r"resume on a number of ranks that divides it \(1, 2, 4, 8\)"):
        check_resume_world_size(path, 3, prompts_per_step=8)


def test_resolving_auto_checks_the_newest_checkpoint(tmp_path):
    root = tmp_path / "run" / "checkpoints"
    saved_by(root / "step_00000002", 2)
    assert checkpoint_to_resume(tmp_path / "run", "auto", 4, prompts_per_step=8) == root / "step_00000002"
    assert checkpoint_to_resume(tmp_path / "run", "never", 3, prompts_per_step=8) is None
    with pytest.raises(UserError, match="this run has 3"):
        checkpoint_to_resume(tmp_path / "run", "auto", 3, prompts_per_step=8)


def test_a_folder_without_rank_0s_state_is_not_a_checkpoint(tmp_path):
    (tmp_path / "step" / "policy").mkdir(parents=True)
    with pytest.raises(UserError, match="no trainer_state_rank0.pt: it is not a complete grpo checkpoint"):
        read_rank_state(tmp_path / "step", 0, 1)


def test_a_missing_rank_file_on_the_saving_world_size_is_named(tmp_path):
    path = saved_by(tmp_path / "step", 2)
    (path / "trainer_state_rank1.pt").unlink()
    with pytest.raises(UserError, match="no trainer_state_rank1.pt although rank 0 records 2 ranks"):
        read_rank_state(path, 1, 2)
