"""Build the tiny random Phi-3 model and tokenizer used by the CPU image and the tests.

    python -m lft_trainer.model.tiny_model --output DIR [--dataset examples/data/chat_tiny.jsonl] [--seed 0]

A seeded random Phi3ForCausalLM (hidden 64, 2 layers, 4 heads, 2 KV heads) and a byte-level BPE
tokenizer trained offline with `tokenizers` on the dataset's text, with the Phi-3 special tokens and
the Phi-3 chat template. No network; a few seconds on one CPU core. Same seed and dataset give the
same weights and the same tokenizer.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..data.chat_templates import PHI3_CHAT_TEMPLATE

EOS_TOKEN = "<|endoftext|>"
END_TOKEN = "<|end|>"
SPECIAL_TOKENS = [EOS_TOKEN, "<|system|>", "<|user|>", "<|assistant|>", END_TOKEN]
DEFAULT_DATASET = Path(__file__).resolve().parents[3] / "examples" / "data" / "chat_tiny.jsonl"
# A fixed corpus used on top of the dataset so every byte-level merge base exists even when the
# builder runs without the example dataset (e.g. in an image build context that lacks it).
_BASE_CORPUS = [
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18",
    "What is the capital? Reverse these words. You are a concise assistant. plus is",
]


def _texts(dataset: Path | None) -> Iterator[str]:
    yield from _BASE_CORPUS
    if dataset is None or not dataset.exists():
        return
    for line in dataset.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        for message in row.get("messages", []):
            yield str(message.get("content", ""))
        for key in ("prompt", "completion", "text"):
            if isinstance(row.get(key), str):
                yield row[key]


def build_tokenizer(texts: Iterable[str], vocab_size: int = 384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,  # as Phi-3-mini: pad is <|endoftext|>
        chat_template=PHI3_CHAT_TEMPLATE,
        model_max_length=4096,
        padding_side="right",
    )


def build_model(vocab_size: int, eos_id: int, end_id: int, seed: int = 0):
    import torch
    from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM

    config = Phi3Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        original_max_position_embeddings=4096,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        tie_word_embeddings=False,
        # 10x the usual 0.02: with LoRA the final norm and the output head stay frozen, and at 0.02 the
        # head's logits span only about +-1, so no adapter could lower the loss much below ln(vocab).
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = Phi3ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[eos_id, end_id], pad_token_id=eos_id)
    return model


def build(output: Path, dataset: Path | None = DEFAULT_DATASET, seed: int = 0) -> Path:
    output.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(_texts(dataset))
    model = build_model(len(tokenizer), tokenizer.convert_tokens_to_ids(EOS_TOKEN),
                        tokenizer.convert_tokens_to_ids(END_TOKEN), seed)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the tiny random Phi-3 model + tokenizer (offline, seeded).")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="JSONL whose text trains the tokenizer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    build(args.output, args.dataset, args.seed)
    print(json.dumps({"event": "tiny_model_built", "output": str(args.output)}))


if __name__ == "__main__":
    main()
