"""GPU check of the colocated vLLM engine with sleep mode: the same checks as the CPU end-to-end
test (tests/e2e/vllm_checks.py) on CUDA, for users to verify their installation.

Skipped without CUDA or without vLLM. Run: `pytest tests/gpu -q` on a machine with one or more GPUs
and the [vllm] extra. Not run in CI, which has no GPU.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("vllm", reason="needs the [vllm] extra")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from cli import DIGIT_REWARD  # noqa: E402


def test_vllm_sleep_mode_sync_on_gpu(tiny_dir, tmp_path):
    (tmp_path / "digit_reward.py").write_text(DIGIT_REWARD)
    ranks = min(2, torch.cuda.device_count())
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore::FutureWarning")
    env.pop("DS_ACCELERATOR", None)  # conftest sets cpu for the CPU suite; here DeepSpeed must find CUDA
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
           "tests/e2e/vllm_checks.py", str(tiny_dir / "model"), str(tiny_dir / "countdown_train.parquet"),
           str(run_dir), "1", "plain"]  # rollout.cpu_linear applies on CPU only
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    reports = [json.loads(line) for path in sorted(run_dir.glob("checks_rank*.jsonl"))
               for line in path.read_text().splitlines()]
    assert result.returncode == 0, json.dumps(reports, indent=1) + result.stderr[-6000:]
    assert len([r for r in reports if "step" in r]) == 3 * ranks
