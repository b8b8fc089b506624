"""A small CLIP-style byte-level BPE vocabulary for the tiny backbones, built without any download.

Layout follows CLIP's ``vocab.json``/``merges.txt``: the 256 byte symbols, the same with the
end-of-word marker ``</w>``, one entry per learned merge, then ``<|startoftext|>`` and
``<|endoftext|>``. Merges are learned deterministically from a fixed English word list (remote
sensing vocabulary included), so common words are single tokens and any other text still
tokenizes through the byte symbols.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"

WORDS = """
a an the this that these those it its is are was were be been being has have had do does
of in on at to from by with without for into onto over under above below between among near
next beside behind before after around along across through inside outside within beyond
left right top bottom upper lower middle center centre central corner side edge end part half
north south east west northern southern eastern western northeast northwest southeast southwest
first second third fourth fifth last other another same different only single both each every
one two three four five six seven eight nine ten many several few most more less all any some
large larger largest small smaller smallest big bigger biggest little long longer longest short
wide narrow tall high low round square rectangular circular oval curved straight thin thick
red green blue white black grey gray brown yellow orange dark light bright pale colored coloured
closest nearest farthest furthest close far adjacent surrounded parked located lying standing
airplane airplanes plane planes aircraft airport runway apron hangar terminal helicopter
ship ships boat boats vessel harbor harbour port dock pier bridge bridges overpass river lake
vehicle vehicles car cars truck trucks bus road roads street highway expressway lane parking
storage tank tanks oil building buildings house houses roof tower chimney chimneys windmill
stadium field fields court courts ground track baseball basketball tennis soccer football golf
swimming pool playground park garden tree trees vegetation forest grass grassland farmland crop
dam station train railway rail toll service area water sea beach coast island sand bare land
industrial residential commercial urban rural city town village factory plant container crane
image picture photo scene region object objects target structure structures shape shaped
located positioned placed situated found seen shown appears visible whole entire full group
which what where who whose is there here and or but not no as than like very also just
""".split()


def bytes_to_unicode() -> dict[int, str]:
    """The reversible byte -> printable character map of byte-level BPE (GPT-2/CLIP convention)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return dict(sorted(table.items()))


def _symbols(word: str, table: dict[int, str]) -> tuple[str, ...]:
    chars = [table[b] for b in word.encode("utf-8")]
    return (*chars[:-1], chars[-1] + END_OF_WORD)


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


@lru_cache(maxsize=1)
def learn_merges() -> tuple[tuple[str, str], ...]:
    """Greedy BPE on WORDS until every word is one token: the most frequent adjacent pair first,
    ties broken alphabetically."""
    table = bytes_to_unicode()
    words = Counter(_symbols(w, table) for w in WORDS)
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, count in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        words = Counter({_merge(s, best): c for s, c in words.items()})
    return tuple(merges)


def build_vocab() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """CLIP-ordered vocabulary and the merges it was built from."""
    byte_symbols = list(bytes_to_unicode().values())
    merges = learn_merges()
    tokens = [*byte_symbols, *(s + END_OF_WORD for s in byte_symbols), *("".join(m) for m in merges), BOS, EOS]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def write_tokenizer(out: Path, max_length: int) -> None:
    """Write a folder that ``CLIPTokenizer.from_pretrained(out)`` loads."""
    from transformers import CLIPTokenizer

    vocab, merges = build_vocab()
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (out / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=max_length)
    tokenizer.save_pretrained(out)
