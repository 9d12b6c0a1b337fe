"""Two torchrun "nodes" on this machine (`--nnodes 2 --node_rank 0|1 --master_addr 127.0.0.1`, one process
each), started by launch/multinode.sh exactly as the README shows, train 2 steps with ZeRO-3 and the vLLM
engine (the transformers engine where vllm is not installed) and save a checkpoint both nodes wrote into.
"""
from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys

import yaml

from cli import REPO, cli_env, tiny_overrides

ENGINE = (["rollout.engine=vllm", "rollout.kv_cache_mb=64"] if importlib.util.find_spec("vllm")
          else ["rollout.engine=hf"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_train_with_zero3(tiny_dir, reward_plugin_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = ["recipes/countdown_tiny.yaml", *tiny_overrides(tiny_dir, run_dir), "train.max_steps=2",
            "reward.functions=[digit_reward:digit_share]", "train.zero_stage=3", "checkpoint.every_steps=2",
            *ENGINE]
    port = str(_free_port())
    nodes = []
    for node_rank in (0, 1):
        env = dict(cli_env(reward_plugin_dir), ACCELERATOR="cpu", NNODES="2", NODE_RANK=str(node_rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port, PYTHON=sys.executable)
        env.pop("RANK", None), env.pop("WORLD_SIZE", None)
        nodes.append(subprocess.Popen(["bash", "launch/multinode.sh", *args], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (out, err) in zip(nodes, outputs):
        assert node.returncode == 0, out[-2000:] + err[-5000:]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["derived"]["world_size"] == 2 and saved["train"]["zero_stage"] == 3
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps] == [1, 2]
    assert all(m["train/grad_norm"] > 0 for m in steps)  # the update ran, on gradients reduced over both nodes
    checkpoint = run_dir / "checkpoints" / "step_00000002"
    # each node's rank wrote its trainer state and its ZeRO-3 shard into the one checkpoint
    assert sorted(p.name for p in checkpoint.glob("trainer_state_rank*.pt")) == ["trainer_state_rank0.pt",
                                                                                 "trainer_state_rank1.pt"]
    assert len(list((checkpoint / "policy").rglob("*optim_states.pt"))) == 2
