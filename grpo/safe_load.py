"""Loading torch files (checkpoints) without running code from them.

`torch.load(weights_only=False)` unpickles arbitrary objects, so a checkpoint copied from elsewhere
can run code the moment it is loaded. `load_weights_only` loads with `weights_only=True`: tensors,
containers, numbers, strings and the classes a caller allows by name are rebuilt, and any other
global (os.system, a class with a malicious __reduce__) is refused instead of called.
`check_weights_only` is the same load used as a gate in front of a library that reads its own files
with weights_only=False and offers no switch (DeepSpeed 0.19.8: its checkpoint engine and
zero_to_fp32 both hard-code it): a file that passes holds nothing the library's unpickler could be
made to call beyond the allowed classes.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Iterable

import torch

from grpo.device import HOST
from grpo.errors import UserError


def _refusal(path: Path, error: Exception) -> UserError:
    """The UserError for a file weights_only refused, naming the file and the global it would have called."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = next((line for line in lines if "Unsupported" in line or "global" in line.lower()), lines[0] if lines else "")
    return UserError(
        f"refusing to load {path}: it holds pickled objects other than tensors and plain data, which could run "
        f"code when loaded ({detail[:300]}). grpo's own checkpoints never do, so this file was not written by "
        "this library as it is (changed, or from elsewhere). Use a checkpoint you made, or delete this one."
    )


def load_weights_only(path: str | Path, allowed: Iterable[type] = (), mmap: bool = False) -> Any:
    """torch.load(path, weights_only=True) into host memory with `allowed` classes also rebuilt; UserError naming the file
    when it holds anything else. `mmap` maps tensor storage instead of reading it (for a check that only unpickles)."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location=HOST, weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:  # what weights_only raises for a global it does not allow
        raise _refusal(path, error) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:  # truncated, not a torch file, unreadable
        raise UserError(f"cannot read {path}: {type(error).__name__}: {str(error)[:300]}. The checkpoint is damaged "
                        "or incomplete; resume from another one (checkpoint.resume=PATH) or start fresh") from None


def check_weights_only(files: Iterable[str | Path], allowed: Iterable[type] = ()) -> None:
    """Refuse (UserError naming the file) any of `files` that weights_only=True would not load."""
    allowed = list(allowed)
    for path in files:
        load_weights_only(path, allowed, mmap=True)
