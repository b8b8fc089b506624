"""``diffris measure-grounding``: how much a backbone's UNet grounds its text, with four measures
of the field (docs/pretraining.md), on held-out captioned scenes that no pretraining or dataset
split draws (their own seed stream):

- **caption gap**: the denoising error in x0 space (the latent the UNet's output implies, against
  the clean one) with the true, a shuffled (another scene's) and the empty caption, per timestep
  bucket; a UNet that reads its caption is far worse with a wrong one at high noise, where the
  caption is the only source of the layout;
- **caption ranking** (Diffusion Classifier): the true caption against one-attribute edits of one
  object's phrase (its class, colour or position), by the x0 error summed over fixed timesteps
  and noises shared by all candidates; the share of pairs the true caption wins (chance 50 %);
- **attention IoU** (DAAM): the head noun's share of the cross-attention on the caption's words,
  head mean, bicubic-upsampled to the image from every layer at 1/16 of the image or finer,
  summed over layers and timesteps, scaled to [0, 1], thresholded at 0.4, against the object's
  mask;
- **feature shift**: how far the four UNet taps DiffRIS reads move, relative to their norm, when
  the object's referring expression is swapped for another scene's; at the model's timestep on the
  clean latent (the paper's single pass), and at t = 250 on a noised one (DDPM-seg, DIFT).

Every draw comes from ``seed``; torch runs on one thread, so a backbone's row repeats exactly.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

GROUNDING_STREAM = 8_001  # entropy word of the held-out scenes (pretraining uses 8_000)
BUCKETS = ((0, 250), (250, 500), (500, 750), (750, 1000))
EDITS = ("class", "colour", "position")
RANK_TIMESTEPS = tuple(range(62, 1000, 125))  # 8 timesteps, one per eighth of the schedule
DAAM_THRESHOLD = 0.4
NOISED_TIMESTEP = 250
COLOURS = ("white", "grey", "red", "blue", "green", "brown", "black", "yellow")
OPPOSITE = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # uint8 [S, S, 3]
    mask: np.ndarray  # bool [S, S], the named object's
    caption: str  # the whole scene, as in pretraining
    expression: str  # the named object alone: "the red vehicle at the bottom right"
    head: str  # the head noun ("vehicle", "tank")
    prefix: str  # the caption up to and including the head noun (locates its tokens)
    edits: dict[str, str]  # edit kind -> the caption with one attribute of the object changed


def held_out_scenes(count: int, seed: int, raw_size: int, size: int) -> list[Scene]:
    """``count`` object scenes whose caption names one object by class, colour and position."""
    from PIL import Image

    from diffris.data import scenes
    from diffris.data.captions import describe_objects

    rng = np.random.default_rng([seed, GROUNDING_STREAM])
    out: list[Scene] = []
    while len(out) < count:
        image, _, objects, _ = scenes.object_scene(rng, raw_size, list(scenes.OBJECT_KINDS))
        caption = describe_objects(objects)
        named = [o for o in objects if sum(p.kind is o.kind for p in objects) == 1]
        if not named:
            continue
        obj = named[rng.integers(len(named))]
        phrase = f"a {obj.colour} {obj.kind.name} at the {scenes.position_word(obj.centre)}"
        present = {o.kind.name for o in objects}
        other_kinds = [k for k in scenes.OBJECT_KINDS if k not in present]
        other_colours = [c for c in COLOURS if c != obj.colour]
        position = scenes.position_word(obj.centre)
        moved = " ".join(OPPOSITE.get(w, w) for w in position.split()) if position != "center" else "top left"
        edited = {
            "class": phrase.replace(obj.kind.name, other_kinds[rng.integers(len(other_kinds))]),
            "colour": phrase.replace(f"a {obj.colour} ", f"a {other_colours[rng.integers(len(other_colours))]} "),
            "position": phrase.replace(f"at the {position}", f"at the {moved}"),
        }
        start = caption.index(phrase) + len(f"a {obj.colour} {obj.kind.name}")
        if raw_size != size:
            image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
            mask = np.asarray(Image.fromarray(obj.mask).resize((size, size), Image.NEAREST))
        else:
            mask = obj.mask
        out.append(
            Scene(
                image=image,
                mask=mask.astype(bool),
                caption=caption,
                expression=f"the {phrase[2:]}",
                head=obj.kind.name.split()[-1],
                prefix=caption[:start],
                edits={kind: caption.replace(phrase, text) for kind, text in edited.items()},
            )
        )
    return out


# --- the backbone side ----------------------------------------------------------------------------


class Probe:
    """A loaded backbone with what the measures need: latents, text features, x0 errors."""

    def __init__(self, folder: Path, scenes: list[Scene]):
        from diffris.models.backbone import FrozenBackbone
        from diffris.pretraining.pretrain import noise_scheduler, prediction_type_of

        self.backbone = FrozenBackbone.from_folder(folder)
        self.scheduler = noise_scheduler(prediction_type_of(folder))
        pixels = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        self.latents = torch.cat([self.backbone.encode_image(b, scaled=True) for b in pixels.split(64)])

    def tokens(self, texts: list[str]) -> Tensor:
        length = self.backbone.max_text_length
        encoded = self.backbone.tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        return encoded["input_ids"]

    def text(self, texts: list[str]) -> Tensor:
        return self.backbone.encode_text(self.tokens(texts))

    def noised(self, steps: Tensor, noise: Tensor) -> Tensor:
        return self.scheduler.add_noise(self.latents, noise, steps)

    @torch.no_grad()
    def x0_error(self, steps: Tensor, noise: Tensor, text: Tensor) -> Tensor:
        """Per-scene MSE between the clean latent and the one the UNet's output implies at ``steps``."""
        noisy = self.noised(steps, noise)
        out = self.backbone.unet(noisy, steps, encoder_hidden_states=text).sample
        alpha = self.scheduler.alphas_cumprod[steps].view(-1, 1, 1, 1)
        if self.scheduler.config.prediction_type == "v_prediction":
            x0 = alpha.sqrt() * noisy - (1 - alpha).sqrt() * out
        else:
            x0 = (noisy - (1 - alpha).sqrt() * out) / alpha.sqrt()
        return (x0 - self.latents).pow(2).flatten(1).mean(1)


def shuffled(texts: list[str]) -> list[str]:
    """Each scene gets the next scene's text (a derangement for more than one scene)."""
    return texts[1:] + texts[:1]


def caption_gaps(probe: Probe, scenes: list[Scene], draws: int, generator: torch.Generator) -> dict[str, float]:
    captions = [s.caption for s in scenes]
    texts = {"true": probe.text(captions), "shuffled": probe.text(shuffled(captions)), "empty": probe.text([""] * len(scenes))}
    row: dict[str, float] = {}
    for low, high in BUCKETS:
        errors = {label: 0.0 for label in texts}
        for _ in range(draws):
            steps = torch.randint(low, high, (len(scenes),), generator=generator)
            noise = torch.randn(probe.latents.shape, generator=generator)
            for label, text in texts.items():
                errors[label] += float(probe.x0_error(steps, noise, text).mean()) / draws
        for label in ("shuffled", "empty"):
            row[f"gap_{label}_t{low}_{high}"] = 100 * (errors[label] / errors["true"] - 1)
    return row


def caption_ranking(probe: Probe, scenes: list[Scene], generator: torch.Generator) -> dict[str, float]:
    """Share of (scene, edit) pairs whose true caption has the lower summed x0 error."""
    candidates = {"true": [s.caption for s in scenes], **{e: [s.edits[e] for s in scenes] for e in EDITS}}
    texts = {label: probe.text(captions) for label, captions in candidates.items()}
    totals = {label: torch.zeros(len(scenes)) for label in texts}
    for t in RANK_TIMESTEPS:
        steps = torch.full((len(scenes),), t, dtype=torch.long)
        noise = torch.randn(probe.latents.shape, generator=generator)
        for label, text in texts.items():
            totals[label] += probe.x0_error(steps, noise, text)
    wins = {e: (totals["true"] < totals[e]).float() for e in EDITS}
    row = {f"ranking_{e}": 100 * float(w.mean()) for e, w in wins.items()}
    row["ranking"] = 100 * float(torch.stack(list(wins.values())).mean())
    return row


def token_positions(probe: Probe, scene: Scene) -> tuple[list[int], list[int]]:
    """Positions of the head noun's tokens and of all word tokens (no start, end or padding) in the
    padded caption; CLIP's BPE works word by word, so a prefix's tokens are the caption's first."""
    length = probe.backbone.max_text_length

    def count(text: str) -> int:  # the start token and the words, the end token not counted
        return len(probe.backbone.tokenizer(text, truncation=True, max_length=length)["input_ids"]) - 1

    before, upto = count(scene.prefix[: -len(scene.head)].rstrip()), count(scene.prefix)
    return [p for p in range(before, upto) if p < length - 1], list(range(1, count(scene.caption)))


def attention_iou(probe: Probe, scenes: list[Scene], generator: torch.Generator) -> dict[str, float]:
    """DAAM: the head noun's share of the attention on the caption's words (the start token, which
    takes most of it, and the end and padding excluded), from every cross-attention layer at 1/16
    of the image or finer (DAAM skips the coarsest), upsampled, summed over ``RANK_TIMESTEPS``,
    scaled to [0, 1], thresholded at 0.4."""
    from diffris.models.attention import record_cross_attention

    size = scenes[0].image.shape[0]
    text = probe.text([s.caption for s in scenes])
    heat = torch.zeros(len(scenes), size, size)
    positions = [token_positions(probe, s) for s in scenes]
    unet = probe.backbone.unet
    for t in RANK_TIMESTEPS:
        steps = torch.full((len(scenes),), t, dtype=torch.long)
        noisy = probe.noised(steps, torch.randn(probe.latents.shape, generator=generator))
        with record_cross_attention(unet) as records, torch.no_grad():
            unet(noisy, steps, encoder_hidden_states=text)
        for record in records:
            probs = torch.from_numpy(record.probs)  # [B, N, T]
            side = int(round(probs.shape[1] ** 0.5))
            if side < size // 16:  # DAAM: the coarsest maps only blur the others
                continue
            share = torch.stack([probs[i, :, h].sum(-1) / probs[i, :, w].sum(-1) for i, (h, w) in enumerate(positions)])
            word = share.view(-1, 1, side, side)
            heat += F.interpolate(word, size=(size, size), mode="bicubic", align_corners=False)[:, 0].clamp(min=0)
    ious = []
    for scene, h, (head, _) in zip(scenes, heat, positions):
        if not head:  # the caption was cut before the head noun (its 32 tokens): nothing to measure
            continue
        if h.max() <= h.min():
            ious.append(0.0)
            continue
        region = ((h - h.min()) / (h.max() - h.min()) >= DAAM_THRESHOLD).numpy()
        union = (region | scene.mask).sum()
        ious.append(float((region & scene.mask).sum() / union))
    return {"attention_iou": float(np.mean(ious)) if ious else float("nan")}


@torch.no_grad()
def feature_shift(probe: Probe, scenes: list[Scene], timestep: int, generator: torch.Generator) -> dict[str, float]:
    """Relative L2 change of the taps, true expression against another scene's, averaged over taps."""
    expressions = [s.expression for s in scenes]
    true, other = probe.text(expressions), probe.text(shuffled(expressions))
    row = {}
    for label, t, latents in (
        (f"feature_shift_t{timestep}", timestep, probe.latents),
        (f"feature_shift_t{NOISED_TIMESTEP}_noised", NOISED_TIMESTEP, None),
    ):
        if latents is None:
            steps = torch.full((len(scenes),), t, dtype=torch.long)
            latents = probe.noised(steps, torch.randn(probe.latents.shape, generator=generator))
        a = probe.backbone.unet_features(latents, t, true)
        b = probe.backbone.unet_features(latents, t, other)
        shifts = [((x - y).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).mean() for x, y in zip(a, b)]
        row[label] = 100 * float(torch.stack(shifts).mean())
    return row


# --- the command ----------------------------------------------------------------------------------

def measure(folder: Path, scenes: list[Scene], seed: int, draws: int, timestep: int) -> dict[str, float | str]:
    """One backbone's row; every measure starts from its own seeded generator."""
    probe = Probe(folder, scenes)
    row: dict[str, float | str] = {"backbone": probe.backbone.name}
    row.update(caption_gaps(probe, scenes, draws, torch.Generator().manual_seed(seed)))
    row.update(caption_ranking(probe, scenes, torch.Generator().manual_seed(seed + 1)))
    row.update(attention_iou(probe, scenes, torch.Generator().manual_seed(seed + 2)))
    row.update(feature_shift(probe, scenes, timestep, torch.Generator().manual_seed(seed + 3)))
    return row


def write_rows(rows: list[dict], out: Path) -> Path:
    """The rows as CSV (percentages and the IoU to 4 decimals), written whole or not at all."""
    from diffris.fileio import atomic_write

    columns = list(rows[0])

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(columns)
            for row in rows:
                writer.writerow([v if isinstance(v, str) else f"{v:.4f}" for v in (row[c] for c in columns)])

    atomic_write(Path(out), write)
    return Path(out)
