"""Shared test setup: single-threaded, offline, the repo importable, and the `tiny_dir` model fixture.

`tiny_dir` builds the tiny tokenizer + Qwen2 model + Countdown parquet files once per test session
with the real CLI (launch/build_tiny.py). Set GRPO_TINY_DIR to a folder to build it there once and
reuse it across sessions (handy when iterating locally).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Before torch is imported anywhere: one thread per process, or shared CI cores thrash (10x slower).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO / ".." / "shared" / "data"  # CI clones the repo with shared/ beside it
if str(REPO) not in sys.path:  # import grpo from the checkout even when it is not pip-installed
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """Folder holding model/ (tokenizer + tiny Qwen2), countdown_train.parquet and countdown_test.parquet."""
    out = Path(os.environ["GRPO_TINY_DIR"]) if os.environ.get("GRPO_TINY_DIR") else tmp_path_factory.mktemp("tiny")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "launch" / "build_tiny.py"), "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0:
        pytest.fail(f"launch/build_tiny.py failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return out
