"""Fixtures of the end-to-end tests: a user reward module importable by the launched processes."""
from __future__ import annotations

from pathlib import Path

import pytest

from cli import DIGIT_REWARD


@pytest.fixture(scope="session")
def reward_plugin_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "digit_reward.py").write_text(DIGIT_REWARD)
    return folder
