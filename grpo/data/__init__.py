"""Prompt data: file readers, templated/tokenised `PromptRecord`s, rank-sharded sampling, task generators."""
from grpo.data.countdown import make_countdown_rows, write_parquet
from grpo.data.loader import PromptSampler, load_prompt_records, read_rows, to_python

__all__ = ["PromptSampler", "load_prompt_records", "make_countdown_rows", "read_rows", "to_python", "write_parquet"]
