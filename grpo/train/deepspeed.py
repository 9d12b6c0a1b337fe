"""The training engine: the policy (and a frozen reference) under DeepSpeed ZeRO (stage 0-3).

The policy is loaded with `HfDeepSpeedConfig` + `from_pretrained`, so under ZeRO-3 each rank only
ever holds its shard; torch's AdamW is the client optimizer (no op compilation on any device).
`DeepSpeedTrainEngine` implements `grpo.train.PolicyEngine` and knows nothing of RL: it turns
micro-batches into token logprobs, takes backward on a loss the trainer computed, and steps. It also
hands out parameters for the weight sync, and saves/loads its state in DeepSpeed's checkpoint format,
on any number of ranks (`OptimizedModel.load_state` reshards through DeepSpeed's universal checkpoint;
`consolidated_state_dict` reads one back into a plain state dict, for export).
"""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import torch

from grpo.config import Config
from grpo.device import DistInfo, is_host, torch_dtype
from grpo.errors import UserError
from grpo.lora import adapter_weights, add_adapters, merged_state, saved_config
from grpo.safe_load import check_weights_only, load_weights_only
from grpo.types import MicroBatch
from grpo.train.shared_gather import SharedMemoryGather, usable as shared_memory_usable
from grpo.train.packing import FlopModel, forward_layout, layout_flops, layout_logprobs, use_row_packing


def deepspeed_config(cfg: Config, stage: int, train: bool, grad_clip: float | None = None) -> dict:
    """DeepSpeed's config for one model; `grad_clip` defaults to train.grad_clip (the policy's)."""
    ds = {
        "train_micro_batch_size_per_gpu": cfg.train.micro_batch_size,
        "gradient_accumulation_steps": cfg.derived.micro_batches_per_update if train else 1,
        "gradient_clipping": cfg.train.grad_clip if grad_clip is None else grad_clip,
        "zero_optimization": {"stage": stage, "stage3_gather_16bit_weights_on_model_save": True},
        "bf16": {"enabled": cfg.model.dtype == "bfloat16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    return ds


# model.gradient_checkpointing=auto turns it on from this size: below it a micro-batch's activations
# fit beside the weights on the accelerators we target, and recomputing them costs a third more compute.
AUTO_CHECKPOINTING_PARAMS = 1_000_000_000


def gradient_checkpointing_on(setting: bool | str, model) -> bool:
    if setting == "auto":  # ds_numel: a ZeRO-3 parameter's full size (numel() is this rank's shard)
        return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters()) >= AUTO_CHECKPOINTING_PARAMS
    return bool(setting)


def load_pretrained(path: str, dtype: torch.dtype, key: str = "model.path", model_class=None, **kwargs):
    """`model_class.from_pretrained` (a causal LM by default) with a clear error for a path that is neither a
    model folder nor a reachable hub id; `key` names the setting the path came from."""
    if model_class is None:
        from transformers import AutoModelForCausalLM as model_class

    try:
        return model_class.from_pretrained(path, **({"dtype": dtype} if dtype is not None else {}), **kwargs)
    except (OSError, ValueError) as e:
        raise UserError(f"{key}: cannot load a model from {path!r}: {str(e).splitlines()[0]}\n"
                        "Give a local folder with config.json and weights, or a Hugging Face hub id reachable from "
                        "this machine (the demo's base model: python launch/build_base.py --out .cache/base).") from None


@contextlib.contextmanager
def sharded_loading(ds_config: dict):
    """While inside, from_pretrained under ZeRO-3 builds the model under zero.Init (each rank loads only its shard).

    transformers keeps the HfDeepSpeedConfig in a process-wide weak reference, so it is dropped on the way
    out: a later from_pretrained in this process (a rollout engine, a second Trainer in a notebook) must
    load whole weights.
    """
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    hf_ds_config = HfDeepSpeedConfig(ds_config) if ds_config["zero_optimization"]["stage"] == 3 else None
    try:
        yield
    finally:
        del hf_ds_config
        unset_hf_deepspeed_config()


class OptimizedModel:
    """One model under a DeepSpeed engine with its own AdamW and linear warm-up: backward, step, learning rate,
    checkpoint state (`grpo.train.TrainEngine`). The policy and the critic are both one."""

    def __init__(self, model, dist: DistInfo, ds_config: dict, lr: float, betas: list[float], weight_decay: float,
                 warmup_steps: int):
        import deepspeed

        self.dist = dist
        self.zero_stage = ds_config["zero_optimization"]["stage"]
        # only what trains: with LoRA the frozen base gets no optimizer state (and no fp32 master copy)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
        # Every DeepSpeed optimizer wrapper (ZeRO 1-3, bf16) skips an update whose global gradient norm is
        # NaN or inf on any rank (engine.skipped_steps counts it; the scheduler does not advance). Stage 0
        # in fp32 steps torch's AdamW directly, with no such check: step() checks the gradient itself.
        self._plain_optimizer = self.optimizer is optimizer
        self.skips_in_a_row = 0  # updates skipped since the last applied one

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        """Backward on a loss that is already this micro-batch's share of the step's loss; `last` for
        the optimizer step's last micro-batch.

        DeepSpeed divides by the accumulation steps and averages gradients over ranks; both are
        undone here so the accumulated gradient is exactly d(step loss)/d(theta). The boundary is
        set by hand because the number of micro-batches per step varies with train.micro_batch_tokens.
        """
        self.engine.set_gradient_accumulation_boundary(last)
        self.engine.backward(loss * self.dist.world_size, scale_wrt_gas=False)
        if not last:
            self.engine.step()  # before the boundary this only advances DeepSpeed's micro-batch counter

    def step(self) -> float | None:
        """Apply the accumulated gradient (call after the step's last micro-batch); returns the grad norm, or
        None when it was NaN or inf on any rank and the update was skipped everywhere (`grpo.train.TrainEngine`)."""
        # DeepSpeed steps only at an accumulation boundary (backward(last=True) set it).
        assert self.engine.is_gradient_accumulation_boundary(), "step() called before the last micro-batch"
        if self._plain_optimizer and not self._gradients_finite():
            self.engine.zero_grad()  # what DeepSpeed's own skip does: drop the gradient, keep weights and moments
            self.skips_in_a_row += 1
            return None
        skipped_before = self.engine.skipped_steps
        self.engine.step()
        if self.engine.skipped_steps > skipped_before:  # DeepSpeed found the global norm non-finite and skipped
            self.skips_in_a_row += 1
            return None
        self.skips_in_a_row = 0
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def _gradients_finite(self) -> bool:
        """Whether every rank's whole gradient is finite (the plain-optimizer path, where each rank holds it all)."""
        import torch.distributed as dist

        bad = any(p.grad is not None and not torch.isfinite(p.grad).all() for p in self.engine.module.parameters())
        flag = torch.tensor([float(bad)], device=self.dist.device)
        if dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return not flag.item()

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def save_state(self, folder: Path) -> None:
        """DeepSpeed's checkpoint (module, optimizer and scheduler state, each rank its shard) into `folder`."""
        self.engine.save_checkpoint(str(folder.parent), tag=folder.name)

    def load_state(self, folder: Path) -> None:
        """Restore what `save_state` wrote, on any number of ranks (collective).

        ZeRO 1-3 shards saved by another number of ranks are resharded through DeepSpeed's universal
        checkpoint: rank 0 converts the folder into one file per parameter and state (fp32 weight,
        exp_avg, exp_avg_sq), every rank loads its new partition of each, then the conversion is
        deleted. A stage-0 folder holds every state whole, so any number of ranks loads it as saved.
        """
        refuse_unsafe_pickles(folder)  # DeepSpeed unpickles its files with weights_only=False: check them first
        saved_ranks = zero_partitions(folder)
        if saved_ranks and saved_ranks != self.dist.world_size:
            self._load_resharded(folder)
            return
        loaded, _ = self.engine.load_checkpoint(str(folder.parent), tag=folder.name, load_optimizer_states=True,
                                                load_lr_scheduler_states=True)
        if loaded is None:
            raise UserError(f"DeepSpeed could not load the checkpoint in {folder}")

    def _load_resharded(self, folder: Path) -> None:
        import torch.distributed as dist

        # Beside the saved folder, so every node sees it where checkpoints already have to be shared; in a scratch
        # folder of its own because the converter also writes a `latest_universal` file next to its output.
        scratch = folder.parent / f".reshard_{folder.name}"
        universal = scratch / folder.name
        failure = [None]  # rank 0's conversion error, sent to every rank so none waits for a load that cannot come
        if self.dist.rank == 0:
            shutil.rmtree(scratch, ignore_errors=True)  # left by a resume that was interrupted
            try:
                convert_to_universal(folder, universal)
            except Exception as e:  # noqa: BLE001 - reported on every rank below
                failure = [f"{type(e).__name__}: {e}"]
        dist.broadcast_object_list(failure, src=0)
        if failure[0] is not None:
            raise RuntimeError(f"resharding {folder}: DeepSpeed's universal-checkpoint conversion failed on rank 0: "
                               f"{failure[0]}")
        # DeepSpeed 0.19.8 reads checkpoint.load_universal only inside load_checkpoint (through
        # engine.load_universal_checkpoint()), so switching it on for this one load equals building the engine with it.
        config = self.engine._config
        config.load_universal_checkpoint = True
        try:
            if not self.engine.load_universal_checkpoint():
                raise RuntimeError(f"DeepSpeed {deepspeed_version()} no longer takes checkpoint.load_universal from "
                                   "engine._config.load_universal_checkpoint; update OptimizedModel._load_resharded")
            loaded, _ = self.engine.load_checkpoint(str(universal.parent), tag=universal.name,
                                                    load_optimizer_states=True, load_lr_scheduler_states=True)
        finally:
            config.load_universal_checkpoint = False
        dist.barrier()
        if self.dist.rank == 0:
            shutil.rmtree(scratch, ignore_errors=True)
        if loaded is None:
            raise UserError(f"DeepSpeed could not load the resharded checkpoint in {folder}")

    def release_gathered(self) -> None:
        """A no-grad ZeRO-3 forward leaves parameters gathered; re-partition them before generating."""
        if self.zero_stage == 3:
            self.engine.empty_partition_cache()


class DeepSpeedTrainEngine(OptimizedModel):
    def __init__(self, cfg: Config, dist: DistInfo):
        import deepspeed

        self.cfg = cfg
        dtype = torch_dtype(cfg.model.dtype)
        stage = cfg.train.zero_stage
        ds_train = deepspeed_config(cfg, stage, train=True)
        self.has_reference = cfg.algo.kl_coef > 0
        self.lora = cfg.model.lora.rank > 0
        with sharded_loading(ds_train):
            model = load_pretrained(cfg.model.path, dtype)
            # with LoRA the reference is the policy with its adapters disabled: no second copy of the base
            ref = load_pretrained(cfg.model.path, dtype) if self.has_reference and not self.lora else None
        if cfg.train.pack_prompts:  # whole micro-batches in one row, no padding (grpo/train/packing.py)
            for one in (model, ref):
                if one is not None:
                    use_row_packing(one)
        if self.lora:
            model = add_adapters(model, cfg.model.lora, cfg.train.seed, cfg.model.path)
        if gradient_checkpointing_on(cfg.model.gradient_checkpointing, model):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        super().__init__(model, dist, ds_train, cfg.train.lr, cfg.train.betas, cfg.train.weight_decay,
                         cfg.train.warmup_steps)
        self._flops = FlopModel.from_config(model.config) if cfg.train.pack_prompts else None
        self.packs_rows = self._flops is not None and self._flops.row_packing
        self._shared_gather = (SharedMemoryGather(dist.rank, dist.world_size)
                               if stage == 3 and is_host(dist.device) and shared_memory_usable(dist.world_size) else None)
        self._flop_counter = self._flops or FlopModel.from_config(model.config)
        self.forward_flops = {"computed": 0.0, "needed": 0.0}
        self.ref_engine = None
        if ref is not None:
            # Without an optimizer only ZeRO-3 saves memory (it shards the weights themselves).
            ref.requires_grad_(False)
            self.ref_engine, *_ = deepspeed.initialize(model=ref, config=deepspeed_config(cfg, 3 if stage == 3 else 0,
                                                                                          train=False))
            self.ref_engine.eval()

    # -- forward passes ----------------------------------------------------------------------
    def _logprobs(self, engine, mb: MicroBatch, temperature: float, with_entropy: bool, entropy_grad: bool = False,
                  count_flops: bool = False):
        # Row-packed (no padding, each distinct prompt once) where the model allows, and only the logits
        # that predict response tokens: see grpo/train/packing.py.
        layout = forward_layout(mb, self._flops, torch_dtype(self.cfg.model.dtype))
        if count_flops:
            computed, needed = layout_flops(self._flop_counter, mb, layout)
            self.forward_flops["computed"] += computed
            self.forward_flops["needed"] += needed
        return layout_logprobs(engine, mb, layout, temperature, with_entropy, entropy_grad)

    def policy_logprobs(self, mb: MicroBatch, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Logprobs with autograd (for the loss) and entropies of the current policy; the forward's FLOPs are
        added to `forward_flops` (computed and needed), which the trainer reads and resets every step."""
        self.engine.train()
        return self._logprobs(self.engine, mb, temperature, with_entropy=True,
                              entropy_grad=self.cfg.algo.entropy_coef > 0, count_flops=True)

    @torch.no_grad()
    def old_policy_logprobs(self, mb: MicroBatch, temperature: float) -> torch.Tensor:
        """The policy's logprobs before this step's updates (for mu > 1, mini-batches, KL in reward)."""
        logp_BT, _ = self._logprobs(self.engine, mb, temperature, with_entropy=False)
        return logp_BT

    @torch.no_grad()
    def reference_logprobs(self, mb: MicroBatch, temperature: float) -> torch.Tensor:
        if self.lora:
            with self.engine.module.disable_adapter():
                logp_BT, _ = self._logprobs(self.engine, mb, temperature, with_entropy=False)
            return logp_BT
        logp_BT, _ = self._logprobs(self.ref_engine, mb, temperature, with_entropy=False)
        return logp_BT

    def release_gathered(self) -> None:
        """A no-grad ZeRO-3 forward leaves parameters gathered; re-partition them before generating."""
        super().release_gathered()
        if self.ref_engine is not None and self.zero_stage == 3:
            self.ref_engine.empty_partition_cache()

    # -- weights -----------------------------------------------------------------------------
    def named_parameters_for_sync(self) -> list[tuple[str, torch.nn.Parameter]]:
        """Every parameter with its Hugging Face name, tied names included, in module order."""
        return list(self.engine.module.named_parameters(remove_duplicate=False))

    def gathered(self, params: list[torch.nn.Parameter]) -> contextlib.AbstractContextManager:
        """Context in which the given (possibly ZeRO-3 sharded) parameters are whole on every rank."""
        if self.cfg.train.zero_stage != 3:
            return contextlib.nullcontext()
        if self._shared_gather is not None:  # ranks on one host, in host memory: through shared memory
            return self._shared_gather.gathered(params)
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)

    def adapter_config(self) -> dict | None:
        """adapter_config.json of the policy's LoRA adapter (peft's saved format); None without LoRA."""
        return saved_config(self.engine.module) if self.lora else None

    def model_config(self):
        return self.engine.module.config

    def save_hf(self, out_dir: str, tokenizer) -> None:
        """Write the policy as a Hugging Face folder (safetensors) from rank 0; collective under ZeRO-3."""
        if self.cfg.train.zero_stage == 3:
            state = self.engine._zero3_consolidated_16bit_state_dict()
        else:
            state = self.engine.module.state_dict()
        if self.dist.rank == 0:
            module = self.engine.module
            if self.lora:  # a plain model with the adapter merged in, and the adapter itself in adapter/
                config = saved_config(module)
                adapter_weights(list(state.items()), config).save(Path(out_dir) / "adapter")
                state = dict(merged_state(list(state.items()), config))
                module = module.get_base_model()
            module.save_pretrained(out_dir, state_dict=state)
            tokenizer.save_pretrained(out_dir)


def deepspeed_checkpoint_classes() -> list[type]:
    """The non-tensor classes DeepSpeed 0.19 pickles into its checkpoint files (found with
    torch.serialization.get_unsafe_globals_in_checkpoint on ZeRO 0-3 checkpoints, bf16 and fp32): plain
    value holders, safe to rebuild. Everything else in those files is tensors and plain data."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]


def refuse_unsafe_pickles(folder: Path) -> None:
    """UserError naming the first file of a DeepSpeed checkpoint folder that holds more than tensors, plain data
    and deepspeed_checkpoint_classes(). DeepSpeed 0.19.8 reads its own files with torch.load(weights_only=False)
    (runtime/checkpoint_engine/torch_checkpoint_engine.py, utils/zero_to_fp32.py) and has no switch for it, so
    each file is loaded once with weights_only=True first (tensor storage memory-mapped, not read), which
    refuses pickled code instead of running it; only then does DeepSpeed read it."""
    check_weights_only(sorted(Path(folder).glob("*.pt")), deepspeed_checkpoint_classes())


def deepspeed_version() -> str:
    import deepspeed

    return deepspeed.__version__


def zero_partitions(folder: Path) -> int:
    """How many ranks wrote the ZeRO 1-3 optimizer shards in a `save_state` folder (one file each); 0 for ZeRO-0,
    whose optimizer state is saved whole."""
    return len(list(folder.glob("*zero_pp_rank_*_mp_rank_00_optim_states.pt")))


def convert_to_universal(folder: Path, out: Path) -> None:
    """DeepSpeed's universal checkpoint of a ZeRO 1-3 `save_state` folder, written to `out` (one process; the
    converter also writes the file `latest_universal` into out's parent).

    The converter prints a line per phase and progress bars; they are kept out of the run's output and
    shown only when it fails. ZeRO 1-2 folders lack the Megatron-style `universal_checkpoint_info`
    that the converter checks for; `inject_missing_state` adds the empty default it needs.
    """
    import io
    import sys
    import types
    from contextlib import redirect_stderr, redirect_stdout

    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    args = types.SimpleNamespace(input_folder=str(folder), output_folder=str(out), num_extract_workers=1,
                                 num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=True)
    log = io.StringIO()
    try:
        with redirect_stdout(log), redirect_stderr(log):
            ds_to_universal(args)
    except Exception:
        sys.stderr.write(log.getvalue()[-4000:])
        raise


def consolidated_state_dict(folder: Path, zero_stage: int) -> dict[str, torch.Tensor]:
    """The whole module's fp32 state dict from a folder `save_state` wrote, in one process without engines:
    ZeRO 1-3 shards are merged by DeepSpeed's own converter; a stage-0 folder already holds the whole module."""
    if zero_stage == 0:
        return load_weights_only(folder / "mp_rank_00_model_states.pt", deepspeed_checkpoint_classes())["module"]
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    refuse_unsafe_pickles(folder)  # zero_to_fp32 unpickles with weights_only=False: check the files first
    return get_fp32_state_dict_from_zero_checkpoint(str(folder.parent), tag=folder.name)
