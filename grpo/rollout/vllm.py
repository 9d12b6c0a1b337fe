"""The colocated vLLM rollout engine: the only file that touches vLLM.

Every rank builds one in-process engine with `distributed_executor_backend="external_launcher"`,
after the world process group exists (building it first makes vLLM create a world of its own).
Contiguous ranks form a tensor-parallel group: its members gather their prompts, generate them
together with the same seeds, and each keeps its own share of the results.

Weights arrive through `load_weights`. On accelerators it calls the worker's in-place
`reload_weights`. On CPU the engine is built with plain linear weights (torch's `linear`), not
vLLM-CPU's default of repacking every linear weight into a oneDNN handle and freeing the weight:
with the weights kept as parameters, a sync is the model's own `load_weights`, a copy of the bytes
into them, where `reload_weights` has to rebuild every layer and repack it (a full sync of the 105M
benchmark model: 1.7x a plain copy of its bytes against 4.0x), at the price of decoding about 6%
slower there (benchmarks/README.md); `rollout.cpu_linear: onednn` keeps vLLM's default. vLLM's
loader does the tensor-parallel slicing and the q/k/v and gate/up fusing either way; the caller must
send whole decoder layers per call and the tied `lm_head.weight` too (see grpo/weight_sync.py).

On accelerators the engine sleeps while the trainer works (level 2: weights and KV cache freed,
nothing offloaded): `wake_weights()` before a sync reallocates the weights, which the sync then
fills, and `wake()` before generating reallocates the KV cache. Weights are never reloaded from
disk after start-up, since that would overwrite the synced ones.

With LoRA in adapter mode (`lora_rank` > 0) the engine keeps the base weights it loaded and takes
each synced adapter through `load_adapter`: written as a peft folder to RAM-backed storage (/dev/shm,
vLLM's LoRA loader reads a path), added under a new adapter id, the previous one removed; every
generation then uses it. It sleeps at level 1 (weights offloaded to host memory and restored, not
freed), because nothing would refill base weights freed at level 2.
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import torch

from grpo.device import is_cpu
from grpo.lora import AdapterWeights
from grpo.types import Completion, SamplingSettings

DEFAULT_CPU_KV_CACHE_MB = 256


class VLLMRolloutEngine:
    def __init__(self, model_path: str, dtype: str, tokenizer, rank: int, world_size: int, max_model_len: int,
                 tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.5, kv_cache_mb: int = 0,
                 max_num_batched_tokens: int = 0, enforce_eager: bool = False, load_format: str = "auto",
                 sleep: bool = True, lora_rank: int = 0, cpu_linear: str = "plain"):
        on_cpu = is_cpu()
        # external_launcher runs the engine in this process anyway; saying so up front skips a spawn attempt
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its per-call INFO lines drown the progress bar
        if on_cpu:
            # vLLM compiles its sampling helpers with inductor on first use: 10-25 s on CPU for no gain
            os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
            kv_cache_mb = kv_cache_mb or DEFAULT_CPU_KV_CACHE_MB
        from vllm import LLM

        self._plain_cpu_weights = on_cpu and cpu_linear == "plain"
        if on_cpu:
            _choose_cpu_linear(plain=self._plain_cpu_weights)
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.tp_size = tensor_parallel_size
        self.tp_rank = rank % tensor_parallel_size
        self.sleeps = sleep and not on_cpu  # CPU vLLM has no sleep mode (enable_sleep_mode raises there)
        self._asleep = False
        kwargs = dict(model=model_path, tokenizer=model_path, dtype=dtype, seed=rank // tensor_parallel_size,
                      tensor_parallel_size=tensor_parallel_size, distributed_executor_backend="external_launcher",
                      max_model_len=max_model_len, enforce_eager=enforce_eager or on_cpu, load_format=load_format,
                      logprobs_mode="processed_logprobs", enable_sleep_mode=self.sleeps,
                      gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=True)
        if kv_cache_mb:
            if on_cpu and "VLLM_CPU_KVCACHE_SPACE" in os.environ:
                # vLLM-CPU lets this legacy variable silently override kv_cache_memory_bytes
                del os.environ["VLLM_CPU_KVCACHE_SPACE"]
            kwargs["kv_cache_memory_bytes"] = kv_cache_mb * 2**20
        if max_num_batched_tokens:
            kwargs["max_num_batched_tokens"] = max_num_batched_tokens
        self._lora_request = None
        if lora_rank:
            kwargs.update(enable_lora=True, max_lora_rank=lora_rank, max_loras=1)
            shm = Path("/dev/shm")  # RAM-backed where it exists: the adapter folder is never on disk
            self._lora_root = Path(tempfile.mkdtemp(prefix="grpo-lora-", dir=shm if shm.is_dir() else None))
            atexit.register(shutil.rmtree, self._lora_root, True)
        if on_cpu:
            # A prefill cut in two discards the token sampled after its first part and rewinds that
            # request's seeded generator, which CPU generators cannot do ("CPU Generator does not use
            # offset"): it crashed as soon as a batch's prompts outgrew the token budget (an eval of
            # 128 prompts per rank). Unchunked, a prompt that does not fit waits for the next step.
            kwargs["enable_chunked_prefill"] = False
        self.llm = LLM(**kwargs)
        # LLM() re-applies vLLM's logging config, so this must come after it: each per-layer reload
        # warns about every layer it did not receive, which is expected when loading layer by layer.
        logging.getLogger("vllm.model_executor.model_loader.reload").setLevel(logging.ERROR)
        if on_cpu:
            # vLLM-CPU pins its threads and turns torch.set_num_threads into a no-op that logs a warning;
            # DeepSpeed calls it every step. Keep the no-op, drop the warning.
            torch.set_num_threads = lambda _threads: None
        self._tp_group = _tensor_parallel_group(rank, world_size, tensor_parallel_size)

    @classmethod
    def from_config(cls, cfg, tokenizer, dist) -> "VLLMRolloutEngine":
        r = cfg.rollout
        adapter_mode = cfg.model.lora.rank > 0 and cfg.sync.lora_mode == "adapter"
        return cls(cfg.model.path, cfg.model.dtype, tokenizer, dist.rank, dist.world_size,
                   max_model_len=cfg.data.max_prompt_length + r.max_new_tokens,
                   tensor_parallel_size=r.tensor_parallel_size, gpu_memory_utilization=r.gpu_memory_utilization,
                   kv_cache_mb=r.kv_cache_mb, max_num_batched_tokens=r.max_num_batched_tokens,
                   enforce_eager=r.enforce_eager, load_format=r.load_format, sleep=r.sleep, cpu_linear=r.cpu_linear,
                   lora_rank=cfg.model.lora.rank if adapter_mode else 0)

    # -- weights and memory ------------------------------------------------------------------
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load full Hugging Face tensors in place; the call must carry whole decoder layers."""
        # With the external launcher, collective_rpc runs on this rank's own worker only.
        if self._plain_cpu_weights:
            self.llm.collective_rpc(_copy_into_model, args=(list(named_tensors),))
        else:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(named_tensors)})
        self.llm.reset_prefix_cache()  # cached prefixes were computed by the old weights

    def load_adapter(self, adapter: AdapterWeights) -> None:
        """Generate with this adapter from now on: a new adapter id, the previous adapter removed."""
        from vllm.lora.request import LoRARequest

        previous = self._lora_request
        number = previous.lora_int_id + 1 if previous is not None else 1
        folder = adapter.save(self._lora_root / str(number))
        request = LoRARequest(f"policy-{number}", number, str(folder))
        self.llm.llm_engine.add_lora(request)
        if previous is not None:
            self.llm.llm_engine.remove_lora(previous.lora_int_id)
            shutil.rmtree(previous.lora_path, ignore_errors=True)
        self._lora_request = request
        self.llm.reset_prefix_cache()

    def wake_weights(self) -> None:
        if self.sleeps and self._asleep:
            self.llm.wake_up(tags=["weights"])

    def wake(self) -> None:
        if self.sleeps and self._asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self._asleep = False
            self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        if self.sleeps and not self._asleep:
            # level 2 frees the weights (the next sync refills them); an adapter sync refills no base weight
            self.llm.sleep(level=1 if self._lora_request is not None else 2)
            self._asleep = True

    # -- sampling ----------------------------------------------------------------------------
    def generate(self, prompt_ids: list[list[int]], sampling: SamplingSettings) -> list[list[Completion]]:
        from vllm import SamplingParams

        own = len(prompt_ids)
        all_prompts, seed, first = prompt_ids, sampling.seed, 0
        if self.tp_size > 1:  # the whole TP group must submit identical requests
            shares = [None] * self.tp_size
            torch.distributed.all_gather_object(shares, (prompt_ids, sampling.seed), group=self._tp_group)
            all_prompts = [ids for share, _ in shares for ids in share]
            seed = shares[0][1]
            first = sum(len(share) for share, _ in shares[:self.tp_rank])
        params = [SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                 top_k=sampling.top_k if sampling.top_k > 0 else -1,
                                 max_tokens=sampling.max_new_tokens, stop=list(sampling.stop) or None,
                                 include_stop_str_in_output=True, logprobs=0,
                                 seed=(seed + i * sampling.n) % 2**63)  # vLLM adds 0..n-1 per sample
                  for i in range(len(all_prompts))]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in all_prompts], params, use_tqdm=False,
                                    lora_request=self._lora_request)
        groups = []
        for out in outputs[first:first + own]:
            group = []
            for c in out.outputs:
                ids = list(c.token_ids)
                logprobs = [step[token].logprob for token, step in zip(ids, c.logprobs)]
                group.append(Completion(token_ids=ids, logprobs=logprobs, text=c.text,
                                        finish_reason="length" if c.finish_reason == "length" else "stop"))
            groups.append(group)
        return groups


def _tensor_parallel_group(rank: int, world_size: int, tp: int):
    """Our own process group over this rank's TP peers (vLLM's groups are internal to it)."""
    if tp == 1:
        return None
    mine = None
    for start in range(0, world_size, tp):  # new_group is collective: every rank creates every group
        group = torch.distributed.new_group(list(range(start, start + tp)))
        if start <= rank < start + tp:
            mine = group
    return mine


def _choose_cpu_linear(plain: bool) -> None:
    """plain: make vLLM-CPU keep each linear layer's weight as a parameter and multiply with torch's `linear`;
    else let it prepack them for oneDNN where its build can (vLLM's default). Applies to engines built after.

    vLLM 0.32's CPU build otherwise reorders every linear weight into a oneDNN handle when a model
    loads and frees the parameter, so a weight update must rebuild each layer and reorder it again.
    Its dispatcher (vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm) falls back to
    torch's `linear` when oneDNN is unavailable; this says it is (a process-wide flag, hence set both ways).
    """
    from vllm import _custom_ops

    if not hasattr(_custom_ops, "_supports_onednn"):
        raise RuntimeError("this vLLM build has no vllm._custom_ops._supports_onednn switch, which the CPU engine "
                           "relies on to keep linear weights updatable in place; use the vLLM version in setup.py")
    _custom_ops._supports_onednn = not plain and hasattr(torch.ops._C, "create_onednn_mm_handler")


def _copy_into_model(worker, named_tensors: list[tuple[str, torch.Tensor]]) -> None:
    """Run on the engine's worker: copy Hugging Face tensors into the model's parameters (vLLM fuses and slices)."""
    worker.get_model().load_weights(named_tensors)
