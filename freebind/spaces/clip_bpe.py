"""CLIP's byte-level BPE tokenizer, as ImageBind's text tower reads it.

The vocabulary is the 49,408 entries of OpenAI CLIP's ``bpe_simple_vocab_16e6.txt.gz``: the
256 byte symbols, the same with the end-of-word marker ``</w>``, the first 48,894 merges of
the file, then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407). Text is cleaned
(ftfy's ``fix_text``, HTML entities unescaped twice, whitespace runs collapsed, stripped),
lower-cased, split by CLIP's pattern, each piece's UTF-8 bytes mapped to printable symbols
and merged by rank. A row is ``[start, ids..., end]`` cut to the context (the last slot
keeps ``end``) and zero-padded.
"""

from __future__ import annotations

import gzip
import hashlib
import html
from functools import lru_cache
from pathlib import Path

from freebind.util.errors import SpaceError

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
VOCAB_URL = "https://github.com/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2
START, END = "<|startoftext|>", "<|endoftext|>"
PATTERN = (r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"""
           r"""|[^\s\p{L}\p{N}]+""")


@lru_cache()
def byte_symbols() -> dict[int, str]:
    """Byte → printable character: printable Latin-1 bytes map to themselves, the others
    to code points from 256 upwards, in byte order. The dict's order (the printable bytes
    first, then the others) is the order of the vocabulary's first 256 entries."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    extra = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + i) for i, b in enumerate(extra)})
    return table


def library_copies() -> list[Path]:
    """The vocabulary file as other installed packages ship it (located, never imported)."""
    import importlib.util

    out = []
    for package, sub in (("open_clip", ""), ("imagebind", "bpe"), ("laion_clap", "clap_module")):
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.submodule_search_locations:
            for root in spec.submodule_search_locations:
                out.append(Path(root) / sub / VOCAB_FILE)
    return out


class ClipTokenizer:
    """``tokenizer(texts) -> LongTensor [N, context]``."""

    def __init__(self, vocab_path, context: int = 77):
        import regex

        path = Path(vocab_path)
        try:
            raw = path.read_bytes()
            if hashlib.sha256(raw).hexdigest() != VOCAB_SHA256:
                raise ValueError(f"not CLIP's vocabulary (sha256 differs from {VOCAB_SHA256[:12]}…)")
            lines = gzip.decompress(raw).decode("utf-8").split("\n")
        except (OSError, ValueError, EOFError) as exc:
            raise SpaceError(f"{path}: cannot read the BPE vocabulary ({exc})") from None
        merges = [tuple(line.split()) for line in lines[1:N_MERGES + 1]]
        symbols = list(byte_symbols().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += [START, END]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.context = context
        self.pattern = regex.compile(PATTERN, regex.IGNORECASE)
        self._regex = regex
        self._cache = {START: START, END: END}

    @property
    def start_id(self) -> int:
        return self.encoder[START]

    @property
    def end_id(self) -> int:
        return self.encoder[END]

    def _merge(self, piece: str) -> str:
        if piece in self._cache:
            return self._cache[piece]
        word = [*piece[:-1], piece[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word, word[1:])}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        out = " ".join(word)
        self._cache[piece] = out
        return out

    def clean(self, text: str) -> str:
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return self._regex.sub(r"\s+", " ", text).strip().lower()

    def encode(self, text: str) -> list[int]:
        table = byte_symbols()
        ids = []
        for piece in self.pattern.findall(self.clean(text)):
            piece = "".join(table[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._merge(piece).split(" "))
        return ids

    def __call__(self, texts):
        import torch

        if isinstance(texts, str):
            texts = [texts]
        out = torch.zeros(len(texts), self.context, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = ([self.start_id] + self.encode(text))[:self.context - 1] + [self.end_id]
            out[i, :len(ids)] = torch.tensor(ids)
        return out
