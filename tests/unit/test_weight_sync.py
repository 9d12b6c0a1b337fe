"""Weight sync: layer keys, bucket plans over the real tiny model, a bucketed push into the transformers
rollout engine from a fake sync source, and the generation/training mode switches.

Sizes of the tiny Qwen2 (hidden 128, intermediate 256, 4 heads, 2 KV heads of 32, vocab 1024, tied),
in fp32 (4 bytes per parameter):
  one decoder layer: q 128*128+128 = 16,512; k and v 64*128+64 = 8,256 each; o 128*128 = 16,384;
                     gate/up/down 3 * 256*128 = 98,304; two norms 256  -> 147,968 params
                     = 591,872 bytes = 0.5645 MiB
  "other":           embedding 1024*128 = 131,072 (lm_head is the same tensor) + final norm 128
                     -> 131,200 params = 524,800 bytes = 0.5005 MiB
  total:             2 * 147,968 + 131,200 = 427,136 params = 1,708,544 bytes = 1.62939453125 MiB
"""
from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from grpo.weight_sync import generation_mode, layer_key, plan_buckets, push_weights, training_mode

LAYER_MIB = 591_872 / 2**20  # 0.5645
OTHER_MIB = 524_800 / 2**20  # 0.5005
TOTAL_BYTES = 1_708_544


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir / "model")


def load_model(tiny_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_dir / "model", dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def named_params(tiny_dir):
    # remove_duplicate=False: the tied lm_head.weight is listed as well, as a sync must send it
    return list(load_model(tiny_dir).named_parameters(remove_duplicate=False))


def test_layer_key():
    assert layer_key("model.layers.3.self_attn.q_proj.weight") == "model.layers.3"
    assert layer_key("model.layers.12.mlp.down_proj.weight") == "model.layers.12"
    assert layer_key("model.embed_tokens.weight") == "other"
    assert layer_key("model.norm.weight") == "other"
    assert layer_key("lm_head.weight") == "other"


def test_tiny_model_sizes_match_the_arithmetic(named_params):
    # The premise of the bucket counts below (see the module docstring).
    unique = {id(p): p for _, p in named_params}.values()
    assert sum(p.numel() for p in unique) * 4 == TOTAL_BYTES
    layer0 = [p for n, p in named_params if layer_key(n) == "model.layers.0"]
    assert sum(p.numel() for p in layer0) == 147_968
    assert any(n == "lm_head.weight" for n, _ in named_params)


# bucket_mb -> expected bucket contents, by layer key, in order:
#   0.001: nothing fits together -> one layer per bucket, "other" last             -> 3 buckets
#   1.0:   layer0 0.5645; + layer1 = 1.129 > 1.0; layer1 + other = 1.065 > 1.0      -> 3 buckets
#   1.2:   layer0 + layer1 = 1.129 <= 1.2; + other = 1.629 > 1.2                   -> 2 buckets
#   1.62:  1.6294 > 1.62                                                           -> 2 buckets
#   1.63:  everything, 1.6294 <= 1.63, only because the tied weight counts once    -> 1 bucket
#          (counted twice, "other" would be 1.0010 and the total 2.1299 MiB)
#   1000:  everything                                                              -> 1 bucket
EXPECTED = {
    0.001: [["model.layers.0"], ["model.layers.1"], ["other"]],
    1.0: [["model.layers.0"], ["model.layers.1"], ["other"]],
    1.2: [["model.layers.0", "model.layers.1"], ["other"]],
    1.62: [["model.layers.0", "model.layers.1"], ["other"]],
    1.63: [["model.layers.0", "model.layers.1", "other"]],
    1000.0: [["model.layers.0", "model.layers.1", "other"]],
}


@pytest.mark.parametrize("bucket_mb", sorted(EXPECTED))
def test_plan_buckets_keeps_layers_whole(named_params, bucket_mb):
    buckets = plan_buckets(named_params, bucket_mb)
    keys = [list(dict.fromkeys(layer_key(n) for n, _ in bucket)) for bucket in buckets]
    assert keys == EXPECTED[bucket_mb]
    # Each layer key lives in exactly one bucket (never split), and every name is sent exactly once:
    # the layers in module order, then the non-layer names (embedding, norm, head) in module order,
    # so every rank gathers the same parameters in the same order.
    for key in ("model.layers.0", "model.layers.1", "other"):
        assert sum(key in k for k in keys) == 1
    names = [n for n, _ in named_params]
    layer_names = [n for n in names if layer_key(n) != "other"]
    assert [n for bucket in buckets for n, _ in bucket] == layer_names + [
        "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    assert len(layer_names) + 3 == len(names) == 27  # 13 per layer
    assert "lm_head.weight" in [n for n, _ in buckets[-1]]
    # A bucket exceeds the limit only when it holds a single unit larger than the limit.
    for bucket, bucket_keys in zip(buckets, keys):
        mib = sum(p.numel() * 4 for p in {id(p): p for _, p in bucket}.values()) / 2**20
        assert mib <= bucket_mb or len(bucket_keys) == 1


def test_plan_buckets_sizes_zero3_shards_by_their_full_size():
    # Under ZeRO-3 the local tensor is an empty shard; ds_numel carries the full size. Two layers of
    # 1 MiB each (262,144 fp32) with a 1.5 MiB limit must go into two buckets, not one.
    params = []
    for i in range(2):
        shard = torch.nn.Parameter(torch.empty(0))
        shard.ds_numel = 262_144
        params.append((f"model.layers.{i}.mlp.up_proj.weight", shard))
    assert len(plan_buckets(params, 1.5)) == 2
    assert len(plan_buckets(params, 2.0)) == 1  # 1 + 1 MiB fits exactly


class FakeSource:
    """Stands in for the training engine: a full (already gathered) model, recording each gather."""

    def __init__(self, model):
        self.model = model
        self.gathers: list[list[torch.nn.Parameter]] = []

    def named_parameters_for_sync(self):
        return list(self.model.named_parameters(remove_duplicate=False))

    def gathered(self, params):
        self.gathers.append(list(params))
        return nullcontext()

    def release_gathered(self) -> None:
        pass

    def adapter_config(self):
        return None  # no LoRA: whole weights


def test_push_weights_copies_every_tensor_into_the_engine(tiny_dir, tokenizer):
    from grpo.rollout.hf import HFRolloutEngine

    engine = HFRolloutEngine(model_path=tiny_dir / "model", dtype=torch.float32, device=torch.device("cpu"),
                             tokenizer=tokenizer, batch_size=4)
    trained = load_model(tiny_dir)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in trained.parameters():  # every tensor moves, so an unsent one would show
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    source = FakeSource(trained)
    source_weights = dict(source.named_parameters_for_sync())
    engine_weights = engine.named_weights()
    assert set(engine_weights) == set(source_weights)
    assert not any(torch.equal(engine_weights[n], source_weights[n]) for n in source_weights)

    metrics = push_weights(source, engine, bucket_mb=1.0)

    for name, tensor in source_weights.items():  # lm_head.weight included
        assert torch.equal(engine_weights[name], tensor), name
        assert engine_weights[name].data_ptr() != tensor.data_ptr()  # the engine has its own bytes
    # bucket_mb 1.0 -> 3 buckets (layer0 | layer1 | other, see the plan test); 1,708,544 bytes with the
    # tied embedding counted once = 1.62939453125 MiB.
    assert metrics == {"sync/buckets": 3.0, "sync/megabytes": pytest.approx(TOTAL_BYTES / 2**20)}
    assert TOTAL_BYTES / 2**20 == pytest.approx(1.6294, abs=1e-4)
    # One gather per bucket; the tied embedding/lm_head tensor is gathered once, in the last bucket.
    assert len(source.gathers) == 3
    gathered_ids = [id(p) for bucket in source.gathers for p in bucket]
    assert len(gathered_ids) == len(set(gathered_ids)) == 26  # 27 names, one of them a tied alias
    assert id(source_weights["lm_head.weight"]) in {id(p) for p in source.gathers[-1]}
    # Training on after the push must not change the engine's copy.
    with torch.no_grad():
        source_weights["model.norm.weight"].add_(1.0)
    assert not torch.equal(engine_weights["model.norm.weight"], source_weights["model.norm.weight"])


class Recorder:
    """Both a sync source and a target: records the calls the mode switches make, in order."""

    def __init__(self):
        self.calls: list[str] = []

    def release_gathered(self) -> None:
        self.calls.append("release_gathered")

    def wake(self) -> None:
        self.calls.append("wake")

    def sleep(self) -> None:
        self.calls.append("sleep")


def test_generation_mode_releases_gathered_then_wakes():
    source, target = Recorder(), Recorder()
    generation_mode(source, target)
    assert source.calls == ["release_gathered"]
    assert target.calls == ["wake"]
    # and in that order: one log shared by both
    shared = Recorder()
    generation_mode(shared, shared)
    assert shared.calls == ["release_gathered", "wake"]


def test_training_mode_puts_the_engine_to_sleep():
    target = Recorder()
    training_mode(target)
    assert target.calls == ["sleep"]
