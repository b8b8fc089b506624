"""``diffris sample-backbone``: text-to-image samples from backbone folders, as one PNG grid
(and, with ``--loss-curve``, the pretraining's loss curves from its ``loss.csv``).

DDIM with SD 1.x's schedule and the folder's prediction type, and classifier-free guidance (the
empty caption is the unconditional one, as in pretraining); latents are divided by the VAE's
scaling factor and decoded. One row per backbone folder, one column per caption; the same initial
noise for every row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

DEFAULT_CAPTIONS = (
    "a white airplane at the top left and a red vehicle at the bottom right",
    "two grey storage tanks and a green tennis court at the center",
    "a red ground track field at the center and a grey ship at the bottom left",
    "an urban tile with a road, cars, buildings and trees",
)


@torch.no_grad()
def sample_images(
    backbone, captions: list[str], steps: int, guidance: float, seed: int, size: int, prediction_type: str = "epsilon"
) -> np.ndarray:
    """uint8 [N, S, S, 3] images for ``captions`` from a ``FrozenBackbone`` whose UNet predicts
    ``prediction_type``."""
    from diffusers import DDIMScheduler

    from diffris.pretraining.pretrain import SD_SCHEDULE

    scheduler = DDIMScheduler(**{**SD_SCHEDULE, "prediction_type": prediction_type}, set_alpha_to_one=False)
    scheduler.set_timesteps(steps)
    length = backbone.max_text_length
    ids = backbone.tokenizer([*captions, ""], padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    text = backbone.encode_text(ids["input_ids"])
    cond, uncond = text[:-1], text[-1:].expand(len(captions), -1, -1)
    unet, vae = backbone.unet, backbone.vae
    latent_side = size // 2 ** (len(vae.config.block_out_channels) - 1)
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn((len(captions), unet.config.in_channels, latent_side, latent_side), generator=generator)
    for t in scheduler.timesteps:
        eps = unet(torch.cat([latents, latents]), t, encoder_hidden_states=torch.cat([cond, uncond])).sample
        eps_cond, eps_uncond = eps.chunk(2)
        latents = scheduler.step(eps_uncond + guidance * (eps_cond - eps_uncond), t, latents).prev_sample
    images = vae.decode(latents / vae.config.scaling_factor).sample
    return to_uint8(images)


def to_uint8(images: Tensor) -> np.ndarray:
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def sample_grid(
    folders: list[Path], captions: list[str], out: Path, steps: int, guidance: float, seed: int, size: int
) -> Path:
    """One row per backbone folder, one column per caption, saved as a PNG."""
    import textwrap

    from matplotlib.figure import Figure

    from diffris.models.backbone import FrozenBackbone
    from diffris.pretraining.pretrain import prediction_type_of

    torch.set_num_threads(1)
    rows = []
    for folder in folders:
        backbone = FrozenBackbone.from_folder(folder)
        images = sample_images(backbone, list(captions), steps, guidance, seed, size, prediction_type_of(folder))
        rows.append((backbone.name, images))
    fig = Figure(figsize=(1.9 * len(captions) + 1, 1.9 * len(rows) + 0.9), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), len(captions), squeeze=False))
    for r, (name, images) in enumerate(rows):
        for c, image in enumerate(images):
            ax = axes[r, c]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(textwrap.fill(captions[c], 28), fontsize=6)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle(f"DDIM {steps} steps, guidance {guidance:g}, seed {seed}", fontsize=9)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    return out


def plot_loss_curve(loss_csv: Path, out: Path, window: int = 25) -> Path:
    """The VAE's reconstruction and the UNet's denoising loss per step, with a running mean."""
    import csv

    from matplotlib.figure import Figure

    with open(loss_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    fig = Figure(figsize=(8, 3), layout="constrained")
    titles = {"vae": "VAE: reconstruction MSE", "unet": "UNet: denoising (epsilon) MSE"}
    for ax, (phase, title) in zip(fig.subplots(1, 2), titles.items()):
        steps = [int(r["step"]) for r in rows if r["phase"] == phase]
        loss = np.array([float(r["loss"]) for r in rows if r["phase"] == phase])
        mean = [loss[max(0, i - window + 1) : i + 1].mean() for i in range(len(loss))]
        ax.plot(steps, loss, color="#bbbbbb", lw=0.6, label="per step")
        ax.plot(steps, mean, color="#1f77b4", lw=1.5, label=f"mean of {window}")
        ax.set(title=title, xlabel="step", yscale="log")
        ax.legend(fontsize=7)
    fig.savefig(out, dpi=120)
    return Path(out)
