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


def build_tokenizer(corpus: list[str]):
    """Byte-level BPE (vocab VOCAB_SIZE including specials and tags) wrapped as a transformers tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(TAG_TOKENS),  # the tags are added after training: total = VOCAB_SIZE
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def build_model(tokenizer, seed: int):
    """A random 2-layer Qwen2ForCausalLM sized for the tokenizer (vocab rounded up to a multiple of 64)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    vocab = -(-len(tokenizer) // 64) * 64  # multiples of 64 keep embedding matmuls aligned
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
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
