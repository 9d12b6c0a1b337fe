"""Build a tiny tokenizer + random Qwen2 model and Countdown parquet files, fully offline.

    python launch/build_tiny.py --out .cache/tiny [--seed 0] [--force]

Writes OUT/model/ (byte-level BPE tokenizer with Qwen's chat markup, 2-layer Qwen2ForCausalLM in
fp32 safetensors), OUT/countdown_train.parquet (2000 rows) and OUT/countdown_test.parquet (256 rows).
Tests and CPU smoke runs use it in place of a hub model: nothing is downloaded. An existing
OUT/model/config.json is reused unless --force.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # a shared CI core runs 10x slower with 2 threads
os.environ.setdefault("HF_HUB_OFFLINE", "1")

try:
    import grpo  # noqa: F401
except ImportError:  # run as a script from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grpo.data.countdown import make_countdown_rows, write_parquet  # noqa: E402
from grpo.templates import TEMPLATES, render_prompt  # noqa: E402

VOCAB_SIZE = 1024
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Added but not special: they must survive decode(skip_special_tokens=True) so format rewards see them.
TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TRAIN_ROWS, TEST_ROWS = 2000, 256


def make_corpus(rows: list[dict]) -> list[str]:
    """Texts the BPE learns from: Countdown prompts in each template plus plausible R1-style answers."""
    corpus = []
    for row in rows:
        prompt = row["prompt"][0]["content"]
        nums, target, solution = row["nums"], row["target"], row["extra_info"]["solution"]
        question = f"Using the numbers {nums}, create an equation that equals {target}."
        answer = f" I combine {', '.join(map(str, nums))} to reach {target}.\n</think>\n<answer> {solution} </answer><|im_end|>"
        corpus.append(prompt + answer)
        corpus.append(render_prompt("qwen_r1", question) + "<think>" + answer)
        corpus.append(render_prompt("base_r1", question) + answer)
    corpus.extend(TEMPLATES.values())
    return corpus


def build_tokenizer(corpus: list[str], vocab_size: int = VOCAB_SIZE, qwen2_split: bool = False):
    """Byte-level BPE (vocab `vocab_size` including specials and tags) wrapped as a transformers tokenizer.

    qwen2_split=True trains with the pre-tokenizer and normalizer that transformers' Qwen2Tokenizer
    installs when AutoTokenizer loads a folder whose config says qwen2 (it rebuilds them from vocab
    and merges, ignoring tokenizer.json's): so the tokens seen in training are the tokens seen at
    load time. Digits are then one token each, as in Qwen2.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers import processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    if qwen2_split:
        from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(TAG_TOKENS),  # the tags are added after training: total = vocab_size
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def build_model(tokenizer, seed: int, hidden_size: int = 128, intermediate_size: int = 256, num_layers: int = 2,
                num_heads: int = 4, num_kv_heads: int = 2, head_dim: int = 32):
    """A random Qwen2ForCausalLM sized for the tokenizer (vocab rounded up to a multiple of 64), tied embeddings."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    vocab = -(-len(tokenizer) // 64) * 64  # multiples of 64 keep embedding matmuls aligned
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim,  # vLLM's CPU attention supports 32, 64, 80, 96, 112, 128, ...
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config).to(torch.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(".cache/tiny"), help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seeds the model weights and the train rows (test: seed+1)")
    parser.add_argument("--force", action="store_true", help="rebuild even if OUT/model/config.json exists")
    args = parser.parse_args(argv)
    out: Path = args.out
    if (out / "model" / "config.json").exists() and not args.force:
        print(f"reusing {out} (model/config.json exists; pass --force to rebuild)")
        return 0

    start = time.perf_counter()
    train_rows = make_countdown_rows(TRAIN_ROWS, seed=args.seed, split="train")
    test_rows = make_countdown_rows(TEST_ROWS, seed=args.seed + 1, split="test")
    tokenizer = build_tokenizer(make_corpus(train_rows))
    model = build_model(tokenizer, args.seed)
    # config.json is the "already built" marker, so the model is written last.
    train_path = write_parquet(train_rows, out / "countdown_train.parquet")
    test_path = write_parquet(test_rows, out / "countdown_test.parquet")
    model_dir = out / "model"
    tokenizer.save_pretrained(model_dir)
    model.save_pretrained(model_dir)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {model_dir} (Qwen2ForCausalLM, {params:,} parameters, fp32; tokenizer {len(tokenizer)} tokens)")
    print(f"wrote {train_path} ({len(train_rows)} rows) and {test_path} ({len(test_rows)} rows)")
    print(f"built in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
