"""Model size presets and tokenizer vocabularies: plain data, no torch import.

A preset fixes the transformer's shape; the vocabulary follows the tokenizer of the dataset
(design.md §8: at `tiny` the 50,304-token GPT-2 head and loss are ~90 % of a CPU step, so
attention/MLP benchmarks at `tiny` use the byte tokenizer).
"""

PRESETS: dict[str, dict[str, object]] = {
    # CPU smoke runs: thousands of tokens/s on 2 cores with the byte tokenizer,
    # ~1.8k tokens/s with the GPT-2 vocabulary.
    "tiny": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128, "dropout": 0.0},
    # CPU benchmarks where the blocks, not the head, dominate.
    "small": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256, "dropout": 0.0},
    # The upstream studies (mechanisms.md §1.1).
    "gpt2-124m": {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024, "dropout": 0.1},
}

# Run-scale train settings per preset, applied when `--preset` scales a study to that size
# (orchestrator.core.resolve): a study written for gpt2-124m evaluates 200 batches and
# accumulates 8 micro-batches per step, which at `tiny` on a CPU is a 45-60 s first eval and
# a few iterations per minute. `--set train.KEY=...` still wins. Empty = the spec's values.
RUN_SCALE: dict[str, dict[str, object]] = {
    "tiny": {"batch_size": 8, "grad_accum": 1, "eval_every": 25, "eval_batches": 4,
             "log_every": 5, "warmup": 10, "stats_every": 25},
    "small": {"batch_size": 8, "grad_accum": 1, "eval_every": 50, "eval_batches": 8,
              "log_every": 10, "warmup": 20, "stats_every": 50},
    "gpt2-124m": {},
}

# Vocabulary size per tokenizer, padded to a multiple of 64 (nanoGPT's 50257 -> 50304).
TOKENIZER_VOCAB: dict[str, int] = {
    "gpt2": 50304,
    "byte": 320,  # 256 bytes + end-of-text (256), padded to 320
}
