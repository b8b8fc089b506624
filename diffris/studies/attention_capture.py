"""The recorders of the attention study (``diffris.studies.attention``): context managers that
install hooks on entry and remove them on exit, leaving the model as it was and its outputs
bit-identical (they only read); the text tokens' words and head noun; the per-sample measures.

- ``record_assignments(model)``: every OAQIL's assignment S_mask [B, M, N] (paper Eqs. 16-19; at
  evaluation the one-hot argmax of the similarities) and its stage's map size, coarse stage first;
- ``record_cross_attention(unet)`` (from ``diffris.models.attention``, which ``measure-grounding``
  shares): every cross-attention layer's probabilities over the text tokens, head mean [B, N, T].
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from diffris.errors import DiffrisError
from diffris.models.attention import CrossAttention, record_cross_attention  # noqa: F401 (the study's recorders)

# Words that end the head noun phrase of a referring expression: prepositions, relative words,
# participles and superlatives of place (the head noun is the last word before the first of them).
PHRASE_ENDS = frozenset(
    """of in on at to from by with without near next beside behind above below under over between
    among along across through inside outside within around beyond before after that which who whose
    where is are was located positioned placed situated parked lying standing surrounded closest
    nearest farthest furthest adjacent close far""".split()
)

ASSIGNMENT_MEASURES = ("inside_share", "inside_ratio", "coverage", "iou")


class AttentionStudyError(DiffrisError):
    """A study input is unusable: the samples, the stride, the batch size, an output path."""


# --- recorders ---------------------------------------------------------------------------------


@dataclass
class StageAssignment:
    """One OAQIL's assignment of one forward pass: [B, M, N] and its map's (h, w)."""

    assignment: np.ndarray
    size: tuple[int, int]


@contextmanager
def record_assignments(model) -> Iterator[list[StageAssignment]]:
    """Forward hooks on the model's OAQILs (stage 1 = coarsest first); yields the list they fill
    on each forward pass (clear it between passes). No OAQIL (no query tokens): stays empty."""
    from diffris.models.pcmrd import OAQIL

    records: list[StageAssignment] = []

    def hook(module, args, output) -> None:
        records.append(StageAssignment(output[1].detach().float().cpu().numpy(), tuple(args[2].shape[-2:])))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, OAQIL)]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


# --- text tokens and words ---------------------------------------------------------------------


@dataclass(frozen=True)
class Word:
    text: str
    positions: tuple[int, ...]  # token positions in the padded sequence


@dataclass(frozen=True)
class TokenGroups:
    """One padded sequence's tokens grouped: start, words, end-of-text and padding."""

    words: tuple[Word, ...]
    start: tuple[int, ...]
    end_padding: tuple[int, ...]
    head: int | None  # index into ``words``

    def positions(self, group: str) -> tuple[int, ...]:
        if group == "head_noun":
            return () if self.head is None else self.words[self.head].positions
        if group == "words":
            return tuple(p for w in self.words for p in w.positions)
        return getattr(self, group)


def token_groups(tokenizer, input_ids: list[int]) -> TokenGroups:
    """CLIP BPE tokens back to words: a word ends at a token with the end-of-word marker ``</w>``."""
    tokens = tokenizer.convert_ids_to_tokens(list(input_ids))
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    start = tuple(i for i, t in enumerate(input_ids) if t == bos)
    first_end = next((i for i, t in enumerate(input_ids) if t == eos and i > 0), len(input_ids))
    words, pending = [], []
    for i in range(len(start), first_end):
        pending.append(i)
        if tokens[i].endswith("</w>") or i == first_end - 1:
            text = tokenizer.convert_tokens_to_string([tokens[j] for j in pending]).replace("</w>", " ").strip()
            words.append(Word(text, tuple(pending)))
            pending = []
    end_padding = tuple(range(first_end, len(input_ids)))
    return TokenGroups(tuple(words), start, end_padding, head_noun([w.text for w in words]))


def head_noun(words: list[str]) -> int | None:
    """The last word before the first phrase end (``PHRASE_ENDS`` or punctuation), or the last
    word when the expression starts with one. A heuristic for short referring expressions
    ("the small white car on the left" -> car), not a parser."""
    content = [i for i, w in enumerate(words) if any(c.isalnum() for c in w)]
    before = []
    for i, word in enumerate(words):
        if word.lower() in PHRASE_ENDS or i not in content:
            break
        before.append(i)
    return before[-1] if before else (content[-1] if content else None)


# --- per-sample measures -----------------------------------------------------------------------


def mask_coverage(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Share of each cell of an (h, w) grid that the [S, S] mask covers (area average, float64)."""
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float64))[None, None]
    return F.adaptive_avg_pool2d(tensor, size)[0, 0].numpy()


def target_token(token_map: np.ndarray, coverage: np.ndarray, num_tokens: int) -> tuple[int, dict[str, float]]:
    """The token whose region best matches the mask (largest IoU, ties to the lowest index) and its
    ``ASSIGNMENT_MEASURES``; NaN measures for an empty mask."""
    total = coverage.sum()
    inside = np.bincount(token_map.ravel(), weights=coverage.ravel(), minlength=num_tokens)
    counts = np.bincount(token_map.ravel(), minlength=num_tokens).astype(np.float64)
    union = counts + total - inside
    ious = np.divide(inside, union, out=np.zeros(num_tokens), where=union > 0)
    best = int(np.argmax(ious))
    if total <= 0:
        return best, dict.fromkeys(ASSIGNMENT_MEASURES, math.nan)
    share = inside[best] / counts[best] if counts[best] > 0 else 0.0
    return best, {
        "inside_share": share,
        "inside_ratio": share / coverage.mean(),
        "coverage": inside[best] / total,
        "iou": ious[best],
    }


def in_mask_ratio(attention: np.ndarray, coverage: np.ndarray) -> float:
    """Attention mass inside the mask over the mask's area fraction; NaN for an empty mask or map."""
    mass, area = attention.sum(), coverage.mean()
    if mass <= 0 or area <= 0:
        return math.nan
    return float((attention * coverage).sum() / mass / area)
