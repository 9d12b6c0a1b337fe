"""Rules of the codebase that DESIGN.md states, checked: docs that stay true, one device file,
imports that point downward, a cheap `import grpo`, and a docstring atop every file.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "grpo"


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_readme_documents_every_config_key():
    from grpo.recipe import field_docs

    readme = (REPO / "README.md").read_text()
    missing = [key for key in field_docs() if f"`{key}`" not in readme]
    assert not missing, f"README's configuration table lacks {missing}"


def test_every_config_field_has_a_doc():
    import dataclasses

    from grpo.config import Config
    from grpo.recipe import field_docs

    docs = field_docs()

    def check(node, prefix: str) -> None:
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            if dataclasses.is_dataclass(value):  # a nested section (model.lora): its own keys carry the docs
                check(value, f"{prefix}{f.name}.")
            else:
                assert docs.get(f"{prefix}{f.name}"), f"{prefix}{f.name} has no one-line doc"

    cfg = Config()
    for section in dataclasses.fields(Config):
        value = getattr(cfg, section.name)
        if section.name != "derived" and dataclasses.is_dataclass(value):
            check(value, f"{section.name}.")


def _code_without_docs(path: Path) -> str:
    """The file's code without comments, docstrings (any string standing alone as a statement, field docs
    too) and `.cpu()` host copies: documentation may name devices, code may not."""
    import io
    import tokenize

    source = path.read_text()
    docs = {(node.value.lineno, node.value.col_offset) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}
    kept: list[str] = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT or (tok.type == tokenize.STRING and tok.start in docs):
            continue
        if tok.type == tokenize.NAME and tok.string == "cpu" and kept and kept[-1] == ".":
            continue  # tensor.cpu(): torch's copy to host memory, not a choice of device
        kept.append(tok.string)
    return " ".join(kept)


ACCELERATOR_NAMES = re.compile(r"\b(cpu|cuda|nccl|npu|hccl|gloo)\b")


def test_only_device_py_names_an_accelerator():
    files = [p for p in _modules() + sorted((REPO / "launch").glob("*.py")) if p.name != "device.py"]
    offenders = {str(p.relative_to(REPO)): sorted(set(ACCELERATOR_NAMES.findall(_code_without_docs(p)))) for p in files}
    offenders = {path: names for path, names in offenders.items() if names}
    assert not offenders, f"accelerator names outside grpo/device.py: {offenders}"


def test_the_accelerator_lint_catches_a_device_string(tmp_path):
    # the lint above must see a device named in code, and only there
    sample = tmp_path / "sample.py"
    sample.write_text('"""Runs on cpu or cuda (a docstring may say so)."""\nx = t.cpu()  # cuda in a comment\n'
                      'device = "cpu"\n')
    assert ACCELERATOR_NAMES.findall(_code_without_docs(sample)) == ["cpu"]


def test_engines_do_not_import_each_other_and_pure_layers_stay_pure():
    for path in (PACKAGE / "rollout").glob("*.py"):
        assert not any(m.startswith("grpo.train") for m in _imports(path)), path
    for path in (PACKAGE / "train").glob("*.py"):
        assert not any(m.startswith("grpo.rollout") for m in _imports(path)), path
    heavy = ("deepspeed", "vllm", "torch.distributed", "grpo.trainer", "grpo.train", "grpo.rollout")
    for folder in ("algorithms", "rewards"):
        for path in (PACKAGE / folder).glob("*.py"):
            assert not any(m.startswith(heavy) for m in _imports(path)), path


def test_import_grpo_is_cheap():
    code = "import sys, grpo; print(sorted(m for m in ('deepspeed', 'transformers', 'vllm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_file_opens_with_a_docstring():
    files = _modules() + sorted((REPO / "launch").glob("*.py")) + sorted((REPO / "tests").rglob("*.py"))
    missing = [str(p.relative_to(REPO)) for p in files if p.stat().st_size and not ast.get_docstring(ast.parse(p.read_text()))]
    assert not missing, f"files without a docstring: {missing}"
