"""Prompt data: file readers, templated/tokenised `PromptRecord`s, rank-sharded sampling, task generators,
and the preparation path (dataset configs, row handlers, verl parquet) behind launch/prepare_data.py."""
from grpo.data.countdown import make_countdown_rows, write_parquet
from grpo.data.handlers import HANDLERS, Example
from grpo.data.loader import (LoadReport, MalformedRow, PromptSampler, check_model_path, load_prompt_records,
                              load_tokenizer, read_rows, to_python)
from grpo.data.multiply import make_multiply_rows

__all__ = [
    "check_model_path",
    "load_tokenizer",
    "HANDLERS",
    "Example",
    "LoadReport",
    "MalformedRow",
    "PromptSampler",
    "load_prompt_records",
    "make_countdown_rows",
    "make_multiply_rows",
    "read_rows",
    "to_python",
    "write_parquet",
]
