"""The transformers rollout engine: shapes and finish reasons, logprobs against an independent forward
pass, seeding, greedy decoding, the top-k/top-p sampler, EOS and stop strings, and load_weights.

Deterministic stopping comes from "spiked" weights loaded with `load_weights`: with o_proj/down_proj
zeroed the residual stream is just the input token's embedding, so the logits are
RMSNorm(E[x]) . E[v] and the embedding rows alone decide what is sampled.
"""
from __future__ import annotations

import math

import pytest
import torch

from grpo.rollout.hf import HFRolloutEngine, sample_tokens
from grpo.types import SamplingSettings

PROMPT_TEXTS = [  # three different token lengths, so a batch needs left padding
    "Using the numbers [1, 2, 3], create an equation that equals 6.",
    "<|im_start|>user\nHi<|im_end|>\n",
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it.",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir / "model")


@pytest.fixture(scope="module")
def reference(tiny_dir):
    """A fresh model loaded independently of the engine: the judge of logprobs and argmaxes."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_dir / "model", dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def prompts(tokenizer):
    ids = [tokenizer(text).input_ids for text in PROMPT_TEXTS]
    assert len({len(p) for p in ids}) == 3, "the prompts must differ in length to exercise left padding"
    return ids


def make_engine(tiny_dir, tokenizer, batch_size: int = 4) -> HFRolloutEngine:
    return HFRolloutEngine(model_path=tiny_dir / "model", dtype=torch.float32, device=torch.device("cpu"),
                           tokenizer=tokenizer, batch_size=batch_size)


@pytest.fixture(scope="module")
def engine(tiny_dir, tokenizer):
    """Shared by the tests that only generate; tests that load weights build their own."""
    return make_engine(tiny_dir, tokenizer)


@torch.no_grad()
def reference_logits(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """Logits [T, V] that predict each completion token: row t sits at position len(prompt) - 1 + t."""
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0]
    return logits[len(prompt) - 1:len(prompt) - 1 + len(completion)]


def original_weights(model) -> dict[str, torch.Tensor]:
    # remove_duplicate=False: lm_head.weight (tied to the embedding) is listed too, as a sync sends it
    return {name: p.detach().clone() for name, p in model.named_parameters(remove_duplicate=False)}


def spiked_weights(model, embedding: torch.Tensor, norm_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """The model's weights with attention and MLP outputs zeroed and the (tied) embedding replaced.

    o_proj = down_proj = 0 makes every block add nothing to the residual, so the final hidden state at
    input token x is norm_scale * RMSNorm(E[x]) and logit_v = norm_scale * RMSNorm(E[x]) . E[v].
    """
    weights = original_weights(model)
    for name in weights:
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            weights[name] = torch.zeros_like(weights[name])
    weights["model.norm.weight"] = torch.full_like(weights["model.norm.weight"], norm_scale)
    weights["model.embed_tokens.weight"] = embedding
    weights["lm_head.weight"] = embedding
    return weights


def always_token(model, target: int) -> dict[str, torch.Tensor]:
    """Weights under which every position samples `target`.

    Embedding rows are all ones except the target row, all twos. RMSNorm of ones or twos is ones, so
    logit_target = 128 * 2 = 256 and every other logit = 128 * 1 = 128: a 128-nat gap, e^-128 ~ 1e-56
    underflows in fp32, so the target is always drawn and its logprob is exactly 0.
    """
    embedding = torch.ones_like(model.model.embed_tokens.weight)
    embedding[target] = 2.0
    return spiked_weights(model, embedding)


def copy_last_token(model) -> dict[str, torch.Tensor]:
    """Weights under which every position samples its own input token again (a "copy" model).

    Embedding rows are random unit vectors: RMSNorm(E[x]) = sqrt(128) * E[x], so logit_v =
    s * sqrt(128) * cos(x, v). cos(x, x) = 1 while cos(x, v) for random 128-d directions is ~N(0, 1/128),
    below 0.5 for every pair here; with s = 20 the gap is >= 20 * 11.3 * 0.5 = 113 nats.
    """
    g = torch.Generator().manual_seed(0)
    embedding = torch.randn(model.model.embed_tokens.weight.shape, generator=g)
    embedding = embedding / embedding.norm(dim=-1, keepdim=True)
    cos = embedding @ embedding.T - 2 * torch.eye(embedding.shape[0])
    assert cos.max() < 0.5  # the premise of the docstring's arithmetic
    return spiked_weights(model, embedding, norm_scale=20.0)


# -- shapes and finish reasons --------------------------------------------------------------------

def test_generate_returns_n_completions_with_consistent_fields(engine, tokenizer, prompts):
    s = SamplingSettings(n=3, max_new_tokens=6, seed=1)
    out = engine.generate(prompts, s)
    assert len(out) == len(prompts)
    eos = tokenizer.eos_token_id
    for group in out:
        assert len(group) == 3
        for c in group:
            assert 1 <= len(c.token_ids) <= 6
            assert len(c.logprobs) == len(c.token_ids)
            assert all(lp <= 0.0 for lp in c.logprobs)
            hit_length = len(c.token_ids) == 6 and c.token_ids[-1] != eos
            assert c.finish_reason == ("length" if hit_length else "stop")
            assert c.text == tokenizer.decode(c.token_ids, skip_special_tokens=True)


# -- logprobs ----------------------------------------------------------------------------------

def test_logprobs_match_independent_forward_pass(engine, reference, prompts):
    # 3 prompts x n=2 = 6 sequences with batch_size 4: two chunks, the first mixing two prompt lengths.
    s = SamplingSettings(n=2, temperature=0.7, max_new_tokens=10, seed=3)
    assert engine.batch_size < len(prompts) * s.n
    out = engine.generate(prompts, s)
    worst_t07 = worst_t1 = 0.0
    for prompt, group in zip(prompts, out):
        for c in group:
            logits_TV = reference_logits(reference, prompt, c.token_ids)
            tokens_T1 = torch.tensor(c.token_ids).unsqueeze(-1)
            expected_T = torch.log_softmax(logits_TV / 0.7, -1).gather(-1, tokens_T1).squeeze(-1)
            at_t1_T = torch.log_softmax(logits_TV, -1).gather(-1, tokens_T1).squeeze(-1)
            got_T = torch.tensor(c.logprobs)
            worst_t07 = max(worst_t07, (got_T - expected_T).abs().max().item())
            worst_t1 = max(worst_t1, (got_T - at_t1_T).abs().max().item())
    assert worst_t07 < 1e-4
    # The check can tell temperatures apart: the same tokens under temperature 1 are far off.
    assert worst_t1 > 1e-2


# -- seeding and greedy ------------------------------------------------------------------------

def test_same_seed_same_completions_different_seed_different(engine, prompts):
    s = SamplingSettings(n=2, max_new_tokens=8, seed=5)
    first = engine.generate(prompts, s)
    again = engine.generate(prompts, s)
    other = engine.generate(prompts, SamplingSettings(n=2, max_new_tokens=8, seed=6))
    flat = lambda out: [c.token_ids for group in out for c in group]  # noqa: E731
    assert flat(first) == flat(again)
    assert [c.logprobs for g in first for c in g] == [c.logprobs for g in again for c in g]
    # 6 sequences x 8 tokens from a near-uniform 1024-token model: a collision is practically impossible
    assert flat(first) != flat(other)


def test_top_k_1_is_greedy(engine, reference, prompts):
    s = SamplingSettings(n=2, top_k=1, max_new_tokens=8, seed=0)
    out = engine.generate(prompts, s)
    for prompt, group in zip(prompts, out):
        assert group[0].token_ids == group[1].token_ids  # no randomness left
        c = group[0]
        logits_TV = reference_logits(reference, prompt, c.token_ids)
        assert logits_TV.argmax(-1).tolist() == c.token_ids
        # The reported logprob is the unfiltered one: top_k=1 would make the filtered one 0, but the
        # random model is near uniform over 1024 tokens (log(1/1024) = -6.9).
        assert max(c.logprobs) < -1.0


# -- sample_tokens -----------------------------------------------------------------------------

def draw(probs: list[float], draws: int = 2000, **kwargs):
    logits_BV = torch.log(torch.tensor([probs])).expand(draws, -1)
    g = torch.Generator().manual_seed(0)
    token_B, logp_B = sample_tokens(logits_BV, kwargs.pop("temperature", 1.0), generator=g, **kwargs)
    return token_B, logp_B


def frequencies(token_B: torch.Tensor, vocab: int) -> list[float]:
    return (torch.bincount(token_B, minlength=vocab).float() / len(token_B)).tolist()


# A binomial frequency over 2000 draws has sd <= sqrt(0.25 / 2000) = 0.011; 0.05 is > 4 sd.
TOL = 0.05


def test_top_p_never_draws_dropped_tokens():
    # probs 0.5, 0.3, 0.15, 0.05 with top_p 0.7: the mass before token 1 is 0.5 < 0.7 (kept), before
    # token 2 it is 0.8 >= 0.7 (dropped), so only tokens 0 and 1 remain, renormalised to
    # 0.5 / 0.8 = 0.625 and 0.3 / 0.8 = 0.375.
    token_B, logp_B = draw([0.5, 0.3, 0.15, 0.05], top_k=0, top_p=0.7)
    freq = frequencies(token_B, 4)
    assert freq[2] == 0.0 and freq[3] == 0.0
    assert freq[0] == pytest.approx(0.625, abs=TOL) and freq[1] == pytest.approx(0.375, abs=TOL)
    # The logprob is of the UNFILTERED distribution (log 0.5, log 0.3), not the renormalised one
    # (log 0.625, log 0.375): the trainer recomputes logprobs with a plain softmax, and the two must
    # agree for the importance ratio to start at 1.
    expected_B = torch.where(token_B == 0, math.log(0.5), math.log(0.3))
    assert torch.allclose(logp_B, expected_B, atol=1e-6)


def test_top_k_keeps_the_k_most_likely():
    # probs 0.1, 0.4, 0.2, 0.3 with top_k 2: tokens 1 and 3 stay, at 0.4 / 0.7 = 0.571 and 0.3 / 0.7 = 0.429.
    token_B, logp_B = draw([0.1, 0.4, 0.2, 0.3], top_k=2, top_p=1.0)
    freq = frequencies(token_B, 4)
    assert freq[0] == 0.0 and freq[2] == 0.0
    assert freq[1] == pytest.approx(0.4 / 0.7, abs=TOL) and freq[3] == pytest.approx(0.3 / 0.7, abs=TOL)
    expected_B = torch.where(token_B == 1, math.log(0.4), math.log(0.3))  # unfiltered, as above
    assert torch.allclose(logp_B, expected_B, atol=1e-6)


def test_top_p_applies_to_the_distribution_left_by_top_k():
    # As in vLLM and transformers, top-p sees the top-k survivors renormalised: 0.4, 0.3 become
    # 0.571, 0.429, so with top_p 0.5 the mass before token 1 (0.571) already reaches 0.5 and only
    # token 0 remains. (Measured against the unrenormalised 0.4 < 0.5, token 1 would wrongly stay.)
    token_B, _ = draw([0.4, 0.3, 0.2, 0.1], top_k=2, top_p=0.5)
    assert frequencies(token_B, 4) == [1.0, 0.0, 0.0, 0.0]


def test_temperature_scales_sampling_and_logprob():
    # temperature 0.5 squares the probabilities: 0.25, 0.09, 0.0225, 0.0025 (sum 0.365), i.e.
    # 0.685, 0.247, 0.062, 0.007; the logprob is log(p^2 / 0.365).
    probs = [0.5, 0.3, 0.15, 0.05]
    token_B, logp_B = draw(probs, temperature=0.5, top_k=0, top_p=1.0)
    squared = [p * p / 0.365 for p in probs]
    for got, want in zip(frequencies(token_B, 4), squared):
        assert got == pytest.approx(want, abs=TOL)
    assert torch.allclose(logp_B, torch.log(torch.tensor(squared))[token_B], atol=1e-5)


# -- EOS and stop strings ----------------------------------------------------------------------

def test_eos_stops_the_sequence(tiny_dir, tokenizer, reference, prompts):
    engine = make_engine(tiny_dir, tokenizer)
    eos = tokenizer.eos_token_id
    engine.load_weights(always_token(reference, eos).items())
    out = engine.generate(prompts, SamplingSettings(n=2, max_new_tokens=8, seed=0))
    for c in (c for group in out for c in group):
        assert c.token_ids == [eos]  # EOS is kept in token_ids, and nothing follows it
        assert c.logprobs == [0.0]
        assert c.finish_reason == "stop"
        assert c.text == ""  # <|im_end|> is special, so decode drops it


def test_stop_string_stops_after_the_token_that_completes_it(tiny_dir, tokenizer, reference, prompts):
    engine = make_engine(tiny_dir, tokenizer)
    close = tokenizer.convert_tokens_to_ids("</answer>")
    engine.load_weights(always_token(reference, close).items())
    # Control: without a stop string the model emits </answer> until max_new_tokens.
    out = engine.generate(prompts, SamplingSettings(n=2, max_new_tokens=8, seed=0))
    assert all(c.token_ids == [close] * 8 and c.finish_reason == "length" for g in out for c in g)
    out = engine.generate(prompts, SamplingSettings(n=2, max_new_tokens=8, stop=["</answer>"], seed=0))
    for c in (c for group in out for c in group):
        assert c.token_ids == [close] and c.logprobs == [0.0]
        assert c.finish_reason == "stop" and c.text == "</answer>"
    # A stop string spanning three tokens ends the sequence at the third.
    out = engine.generate(prompts, SamplingSettings(n=2, max_new_tokens=8, stop=["</answer>" * 3], seed=0))
    assert all(c.token_ids == [close] * 3 and c.finish_reason == "stop" for g in out for c in g)


def test_rows_finish_independently_within_a_batch(tiny_dir, tokenizer, reference):
    # Under the copy model every completion repeats the prompt's last token. One batch (batch_size 4)
    # holds a prompt ending in EOS (stops at 1 token on EOS), one ending in </answer> (stops at 1 token
    # on the stop string) and one ending in something else (runs to max_new_tokens = 5).
    engine = make_engine(tiny_dir, tokenizer)
    engine.load_weights(copy_last_token(reference).items())
    eos, close = tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("</answer>")
    plain = tokenizer("ab").input_ids
    prompts = [plain + [eos], [5, 6] + plain + [close], plain]
    out = engine.generate(prompts, SamplingSettings(n=1, max_new_tokens=5, stop=["</answer>"], seed=0))
    (ends_eos,), (ends_stop,), (runs_on,) = out
    assert (ends_eos.token_ids, ends_eos.finish_reason) == ([eos], "stop")
    assert (ends_stop.token_ids, ends_stop.finish_reason) == ([close], "stop")
    assert (runs_on.token_ids, runs_on.finish_reason) == ([plain[-1]] * 5, "length")
    assert len(runs_on.logprobs) == 5


# -- load_weights ------------------------------------------------------------------------------

def test_load_weights_rejects_unknown_name_and_wrong_shape(engine):
    with pytest.raises(KeyError, match="model.not_a_weight"):
        engine.load_weights([("model.not_a_weight", torch.zeros(3))])
    with pytest.raises(ValueError, match=r"model\.norm\.weight.*\(64,\).*\(128,\)"):
        engine.load_weights([("model.norm.weight", torch.zeros(64))])


def test_loading_original_weights_back_restores_outputs(tiny_dir, tokenizer, reference, prompts):
    engine = make_engine(tiny_dir, tokenizer)
    s = SamplingSettings(n=2, max_new_tokens=8, seed=7)
    first = engine.generate(prompts, s)
    close = tokenizer.convert_tokens_to_ids("</answer>")
    engine.load_weights(always_token(reference, close).items())
    spiked = engine.generate(prompts, s)
    assert all(c.token_ids == [close] * 8 for g in spiked for c in g)  # the load took effect
    engine.load_weights(original_weights(reference).items())
    restored = engine.generate(prompts, s)
    assert [c.token_ids for g in restored for c in g] == [c.token_ids for g in first for c in g]
    assert [c.logprobs for g in restored for c in g] == [c.logprobs for g in first for c in g]
