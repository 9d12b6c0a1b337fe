"""Loading a checkpoint runs no code from it: our trainer state and DeepSpeed's files load with weights_only=True
(or are checked with it before DeepSpeed reads them), a planted pickle payload is refused naming the file, and
its side effect never happens.

Each payload is shown to be live first: loading it the unsafe way (weights_only=False) does create the marker
file, so the refusals below are what keeps it from running, not a dud payload.
"""
from __future__ import annotations

import os
import random
import shlex

import pytest
import torch

from grpo.checkpoint import read_rank_state
from grpo.data import PromptSampler
from grpo.device import rng_state, set_rng_state
from grpo.errors import UserError
from grpo.types import PromptRecord


class _TouchOnLoad:
    """Unpickling this calls os.system("touch MARKER"): the shape of a malicious checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def _plant(path, marker, **extra):
    """A torch file that looks like a checkpoint but runs `touch marker` when unpickled unsafely."""
    torch.save({"step": 3, "world_size": 1, **extra, "payload": _TouchOnLoad(marker)}, path)


def _payload_is_live(path, marker):
    """Load `path` the unsafe way once: the marker appears (the payload works), then remove it again."""
    torch.load(path, weights_only=False)
    assert marker.exists(), "the planted payload did not run even when loaded unsafely: the test would prove nothing"
    marker.unlink()


def test_trainer_state_round_trips_with_weights_only(tmp_path):
    # What Trainer._save_checkpoint writes: step, the sampler's cursor, every RNG state (Python's random.getstate()
    # is a tuple (3, 625 ints, None), torch's a byte tensor), the world size. weights_only=True rebuilds tuples,
    # so the state needs no conversion, and checkpoints saved before this change (the same tuple) load as they are.
    records = [PromptRecord(f"q{i}", [i], "gt", "math", i) for i in range(10)]
    sampler = PromptSampler(records, 2, rank=0, world_size=1, seed=5)
    sampler.next_batch()
    random.seed(11)
    torch.manual_seed(11)
    state = {"step": 7, "sampler": sampler.state_dict(), "rng": rng_state(), "world_size": 1}
    torch.save(state, tmp_path / "trainer_state_rank0.pt")
    expected_python, expected_torch = random.random(), torch.rand(3)  # the draws right after the save

    loaded = read_rank_state(tmp_path, rank=0, world_size=1)
    assert loaded["step"] == 7 and loaded["sampler"] == sampler.state_dict() == {
        "epoch": 0, "offset": 2, "seed": 5, "num_records": 10, "shuffle": 1}
    assert isinstance(loaded["rng"]["python"], tuple) and loaded["rng"]["python"] == state["rng"]["python"]
    set_rng_state(loaded["rng"])
    assert random.random() == expected_python and torch.equal(torch.rand(3), expected_torch)


def test_planted_trainer_state_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    state_file = tmp_path / "trainer_state_rank0.pt"
    _plant(state_file, marker)
    _payload_is_live(state_file, marker)
    with pytest.raises(UserError) as refused:
        read_rank_state(tmp_path, rank=0, world_size=1)
    message = str(refused.value)
    assert f"refusing to load {state_file}" in message and "could run code" in message
    assert "system" in message  # names the global it would have called (posix.system)
    assert not marker.exists()


def test_damaged_trainer_state_is_a_clear_error(tmp_path):
    state_file = tmp_path / "trainer_state_rank0.pt"
    torch.save({"step": 1, "world_size": 1}, state_file)
    state_file.write_bytes(state_file.read_bytes()[:40])  # cut short, as by a full disk
    with pytest.raises(UserError, match=f"cannot read {state_file}: .*damaged or incomplete"):
        read_rank_state(tmp_path, rank=0, world_size=1)


def test_deepspeed_files_are_checked_before_deepspeed_reads_them(tmp_path):
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    from grpo.train.deepspeed import consolidated_state_dict, refuse_unsafe_pickles

    # A folder as save_state writes it at ZeRO stage 0, holding the classes DeepSpeed itself pickles into its
    # files (seen in real ZeRO 0-3 checkpoints): it passes the check and the module loads.
    folder = tmp_path / "policy"
    folder.mkdir()
    weight = torch.arange(6, dtype=torch.float32).view(2, 3)
    torch.save({"module": {"w": weight}, "ds_version": "0.19.8"}, folder / "mp_rank_00_model_states.pt")
    torch.save({"zero_stage": ZeroStageEnum.weights, "loss_scaler": LossScaler(1.0),
                "param_slice_mappings": [{"w": fragment_address(numel=6, start=0)}]},
               folder / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    refuse_unsafe_pickles(folder)
    assert torch.equal(consolidated_state_dict(folder, zero_stage=0)["w"], weight)

    # The same folder with a payload in DeepSpeed's optimizer file: load_state and export refuse it by name.
    marker = tmp_path / "pwned"
    planted = folder / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    _plant(planted, marker, zero_stage=ZeroStageEnum.weights)
    _payload_is_live(planted, marker)
    with pytest.raises(UserError, match=f"refusing to load {planted}"):
        refuse_unsafe_pickles(folder)  # what DeepSpeedTrainEngine.load_state runs before engine.load_checkpoint
    with pytest.raises(UserError, match=f"refusing to load {planted}"):
        consolidated_state_dict(folder, zero_stage=3)  # checked before DeepSpeed's zero_to_fp32 reads it
    _plant(folder / "mp_rank_00_model_states.pt", marker, module={"w": weight})
    with pytest.raises(UserError, match="refusing to load .*mp_rank_00_model_states.pt"):
        consolidated_state_dict(folder, zero_stage=0)
    assert not marker.exists()
