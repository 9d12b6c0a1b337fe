"""End-to-end: after training under ZeRO-3 on 2 ranks, the rollout engine holds exactly the trained weights."""
from __future__ import annotations

import json

from cli import cli_env, run_cli


def test_rollout_weights_equal_gathered_trained_weights(tiny_dir, reward_plugin_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(["tests/e2e/sync_parity.py", str(tiny_dir / "model"), str(tiny_dir / "countdown_train.parquet"),
                      str(run_dir)], cli_env(reward_plugin_dir), torchrun=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    reports = [json.loads(path.read_text()) for path in sorted(run_dir.glob("parity_rank*.json"))]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    for report in reports:
        # the tiny model: 2 layers x 12 tensors (q,k,v weight+bias, o, gate, up, down, 2 norms) + embed_tokens, norm and the tied lm_head = 27 names
        assert report["checked"] == 27 and report["mismatched"] == []
        assert report["moved"] == 27  # the sync really delivered new weights, not the initial ones
