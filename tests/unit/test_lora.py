"""LoRA (model.lora) on the tiny model, without DeepSpeed: the weight sync's two modes against peft's own merge,
the transformers engine taking an adapter, names and the saved format peft loads back, and the config checks.
"""
from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from grpo.config import LoraConfig
from grpo.lora import (AdapterWeights, add_adapters, hf_name, live_name, merge_linear, merged_state, saved_config,
                       saved_name)
from grpo.weight_sync import push_weights

LORA = LoraConfig(rank=8, alpha=16.0)


def tiny(tiny_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_dir / "model", dtype=torch.float32).eval()


def trained_wrapped(tiny_dir):
    """The tiny model with adapters whose B is no longer zero (as after training), so the adapter changes outputs."""
    model = add_adapters(tiny(tiny_dir), LORA, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


class WrappedSource:
    """Stands in for the training engine: a peft-wrapped model, already whole (no ZeRO shards)."""

    def __init__(self, model):
        self.model = model

    def named_parameters_for_sync(self):
        return list(self.model.named_parameters(remove_duplicate=False))

    def gathered(self, params):
        return nullcontext()

    def release_gathered(self):
        pass

    def adapter_config(self):
        return saved_config(self.model)


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


IDS = list(range(3, 30))


def test_only_adapters_train_and_the_names_map_both_ways(tiny_dir):
    model = add_adapters(tiny(tiny_dir), LORA, seed=0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    # all-linear: q, k, v, o, gate, up, down in each of the 2 layers, an A and a B each; not lm_head
    assert len(trainable) == 2 * 7 * 2 and all(".lora_" in n for n in trainable)
    name = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    assert saved_name(name) == "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    assert live_name(saved_name(name)) == name
    assert hf_name("base_model.model.model.layers.1.mlp.down_proj.base_layer.weight") == "model.layers.1.mlp.down_proj.weight"
    # seeded: two wraps start from the same adapter (every rank, every rollout engine)
    again = add_adapters(tiny(tiny_dir), LORA, seed=0)
    assert torch.equal(dict(model.named_parameters())[name], dict(again.named_parameters())[name])


def test_merge_is_w_plus_scaled_b_a():
    w, a, b = torch.ones(3, 2), torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0], [0.0], [-1.0]])
    # alpha/r = 16/8 = 2: W + 2 [[1,2],[0,0],[-1,-2]]
    assert merge_linear(w, a, b, 2.0).tolist() == [[3.0, 5.0], [1.0, 1.0], [-1.0, -3.0]]
    assert w.tolist() == [[1.0, 1.0]] * 3  # W itself untouched


def test_merged_sync_equals_peft_merge_and_leaves_the_trained_base_alone(tiny_dir, tokenizer):
    from grpo.rollout.hf import HFRolloutEngine

    trained = trained_wrapped(tiny_dir)
    base_before = {n: p.clone() for n, p in trained.named_parameters() if "base_layer" in n}
    engine = HFRolloutEngine(tiny_dir / "model", torch.float32, torch.device("cpu"), tokenizer, batch_size=4)
    metrics = push_weights(WrappedSource(trained), engine, bucket_mb=1.0, lora_mode="merged")
    assert all(torch.equal(p, base_before[n]) for n, p in trained.named_parameters() if "base_layer" in n)
    reference = logits(trained, IDS)  # the wrapped model with its adapter: what the trainer computes
    torch.testing.assert_close(logits(engine.model, IDS), reference, atol=1e-5, rtol=1e-5)
    merged = trained.merge_and_unload()  # peft's own merge, for the weights themselves
    for name, tensor in merged.state_dict().items():
        torch.testing.assert_close(engine.named_weights()[name], tensor, atol=1e-6, rtol=1e-6, msg=name)
    assert metrics["sync/buckets"] == 3.0  # whole layers, as without LoRA


def test_adapter_sync_sends_only_the_adapter_and_the_engine_uses_it(tiny_dir, tokenizer):
    from grpo.rollout.hf import HFRolloutEngine

    trained = trained_wrapped(tiny_dir)
    engine = HFRolloutEngine(tiny_dir / "model", torch.float32, torch.device("cpu"), tokenizer, batch_size=4, lora=LORA)
    before = logits(engine.model, IDS)
    metrics = push_weights(WrappedSource(trained), engine, bucket_mb=1.0, lora_mode="adapter")
    after = logits(engine.model, IDS)
    torch.testing.assert_close(after, logits(trained, IDS), atol=1e-5, rtol=1e-5)
    assert (after - before).abs().max() > 1e-3  # the adapter changed what the engine computes
    # 28 matrices: per layer and module A (8 x in) and B (out x 8); fp32 bytes of the adapter only
    adapter_bytes = sum(p.numel() * 4 for n, p in trained.named_parameters() if ".lora_" in n)
    assert metrics == {"sync/buckets": 1.0, "sync/megabytes": pytest.approx(adapter_bytes / 2**20)}
    assert adapter_bytes < 0.2 * sum(p.numel() * 4 for p in trained.parameters())


def test_the_saved_adapter_loads_back_in_peft(tiny_dir, tmp_path):
    from peft import PeftModel

    trained = trained_wrapped(tiny_dir)
    named = [(n, p.detach()) for n, p in trained.named_parameters()]
    adapter = AdapterWeights(saved_config(trained), [(saved_name(n), t) for n, t in named if ".lora_" in n])
    folder = adapter.save(tmp_path / "adapter")
    loaded = PeftModel.from_pretrained(tiny(tiny_dir), folder)
    torch.testing.assert_close(logits(loaded, IDS), logits(trained, IDS), atol=1e-5, rtol=1e-5)
    # and the merged state as plain names loads into the plain model with the same outputs
    plain = tiny(tiny_dir)
    missing, unexpected = plain.load_state_dict(dict(merged_state(named, saved_config(trained))), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied to the embedding
    torch.testing.assert_close(logits(plain, IDS), logits(trained, IDS), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("override, message", [
    ("model.lora.rank=12", "model.lora.rank = 12: the vllm engine takes ranks 1, 8, 16"),
    ("model.lora.alpha=0", "model.lora needs alpha > 0"),
])
def test_lora_settings_are_checked_when_the_config_is_finalised(override, message):
    from grpo.config import ConfigError
    from grpo.recipe import load_config

    cfg = load_config(None, ["rollout.engine=vllm", "model.lora.rank=8", override, "data.train_files=[x.parquet]"])
    with pytest.raises(ConfigError, match=message):
        cfg.finalize(1)


@pytest.fixture
def tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir / "model")
