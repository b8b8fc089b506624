"""Pretraining the tiny SD-shaped backbones as a latent text-to-image diffusion model.

``diffris pretrain-backbone --run NAME`` trains, from the seeded random weights of a ``tiny``
backbone (params.yaml ``pretraining.<run>.architecture``), on captioned whole scenes of the
synthetic domain (:mod:`diffris.data.captions`):

1. the VAE as a KL-regularised autoencoder (MSE reconstruction + ``kl_weight`` x KL), after which
   its ``scaling_factor`` is set to 1 / std of the latents, the rule that gave SD's 0.18215;
2. the UNet on the scaled latents with diffusers' ``DDPMScheduler`` and SD 1.x's schedule
   (scaled_linear, beta 0.00085-0.012, 1000 steps), the MSE of ``prediction_type`` (epsilon as
   SD 1.x, or v), with ``high_noise_fraction`` of each batch drawn from t >= 500 and the rest
   uniform, conditioned on the text encoder's ``last_hidden_state`` with captions dropped to the
   empty caption with probability ``caption_dropout`` (classifier-free guidance). With
   ``train_text_encoder`` the text encoder learns with the UNet (GLIDE); else it stays random.
   AdamW at ``lr``, constant or with a cosine decay to 0 at the last checkpoint.

The UNet (and text encoder) is saved at each step count of ``unet.checkpoints``; all checkpoints
share the VAE, as SD 1.1-1.5 share one VAE. The output folder::

    <backbone>/    one diffusers-layout backbone per checkpoint (+ backbone.json, scheduler/)
    loss.csv       phase, step, training loss (the denoising-loss curve)
    summary.json   held-out losses per checkpoint: captioned, empty caption, shuffled captions

Every draw comes from the run's seed and torch runs on one thread, so the folder is
byte-identical for a seed (tests/test_pretrain.py).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffris.errors import ConfigError
from diffris.fileio import atomic_folder
from diffris.models.architecture import TinySpec, tiny_architecture, tiny_spec
from diffris.models.config import from_dict
from diffris.models.tokenizer import build_vocab, write_tokenizer
from diffris.models.weights import write_info

PREDICTION_TYPES = ("epsilon", "v_prediction")
LR_SCHEDULES = ("constant", "cosine")
HIGH_NOISE = 500  # the high-noise timesteps: t >= 500 of 1000 (SNR < 0.38 on SD's schedule)
SD_SCHEDULE = {  # SD 1.x's scheduler_config.json (v1-5)
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "steps_offset": 1,
}


@dataclass(frozen=True)
class VAEBudget:
    steps: int
    batch_size: int
    lr: float
    kl_weight: float


@dataclass(frozen=True)
class UNetBudget:
    batch_size: int
    lr: float
    caption_dropout: float  # probability of the empty caption (classifier-free guidance)
    train_text_encoder: bool  # train the text encoder with the UNet (GLIDE), not frozen
    prediction_type: str  # epsilon (SD 1.x) | v_prediction (SD 2.x's 768 models)
    high_noise_fraction: float  # share of each batch whose timesteps are drawn from t >= 500
    lr_schedule: str  # constant | cosine (to 0 at the last checkpoint)


@dataclass(frozen=True)
class PretrainSpec:
    """``pretraining.<run>`` in params.yaml (``checkpoints`` is parsed apart: backbone -> steps)."""

    architecture: str  # a `tiny` backbone: its sizes and seeded initial weights are the start
    seed: int
    images: int  # training images (whole scenes)
    eval_images: int  # held-out images for the summary's losses
    raw_image_size: int  # the generator's side, then resized as `diffris prepare` does
    image_size: int
    urban_fraction: float  # share of RefSegRS-style urban tiles among the scenes
    vae: VAEBudget
    unet: UNetBudget


@dataclass(frozen=True)
class PretrainRun:
    name: str
    spec: PretrainSpec
    tiny: TinySpec
    checkpoints: dict[str, int]  # backbone name -> UNet steps, increasing


def pretrain_run(params: dict, name: str) -> PretrainRun:
    """The validated pretraining run ``name`` of params.yaml."""
    runs = params.get("pretraining") or {}
    if name not in runs:
        raise ConfigError(f"pretraining run {name!r} is not one of: {', '.join(runs) or 'none'}")
    entry = dict(runs[name])
    where = f"pretraining.{name}"
    checkpoints = (entry.get("unet") or {}).get("checkpoints")
    if not isinstance(checkpoints, dict) or not checkpoints:
        raise ConfigError(f"{where}.unet.checkpoints: expected a mapping backbone -> UNet steps")
    entry["unet"] = {k: v for k, v in entry["unet"].items() if k != "checkpoints"}
    spec = from_dict(PretrainSpec, entry, where)
    for backbone, steps in checkpoints.items():
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"{where}.unet.checkpoints.{backbone}: expected a positive step count, got {steps!r}")
        if (params["backbones"].get(backbone) or {}).get("pretrained") != name:
            raise ConfigError(
                f"{where}.unet.checkpoints.{backbone}: backbones.{backbone} must be {{pretrained: {name}}}"
            )
    if len(set(checkpoints.values())) != len(checkpoints):
        raise ConfigError(f"{where}.unet.checkpoints: two backbones at the same step count")
    unet = spec.unet
    choices = (("prediction_type", unet.prediction_type, PREDICTION_TYPES), ("lr_schedule", unet.lr_schedule, LR_SCHEDULES))
    for key, value, allowed in choices:
        if value not in allowed:
            raise ConfigError(f"{where}.unet.{key}: expected one of {', '.join(allowed)}, got {value!r}")
    if not 0.0 <= unet.high_noise_fraction <= 1.0:
        raise ConfigError(f"{where}.unet.high_noise_fraction: expected a share in [0, 1], got {unet.high_noise_fraction!r}")
    base = params["backbones"].get(spec.architecture) or {}
    if "tiny" not in base:
        raise ConfigError(f"{where}.architecture: {spec.architecture!r} is not a `tiny` entry of `backbones`")
    ordered = dict(sorted(checkpoints.items(), key=lambda kv: kv[1]))
    return PretrainRun(name, spec, tiny_spec(base, spec.architecture), ordered)


# --- data --------------------------------------------------------------------------------------


def scenes_tensor(run: PretrainRun) -> tuple[Tensor, list[str]]:
    """Training + held-out images in [-1, 1] [N, 3, S, S] and their captions."""
    from diffris.data.captions import captioned_scenes

    s = run.spec
    count = s.images + s.eval_images
    images, captions = captioned_scenes(count, s.seed, s.raw_image_size, s.image_size, s.urban_fraction)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return pixels, captions


def clip_tokenizer(max_length: int):
    """The tiny backbones' tokenizer, in memory (the same one ``write_tokenizer`` saves)."""
    from transformers import CLIPTokenizer

    vocab, merges = build_vocab()
    return CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=max_length)


def tokenize(tokenizer, captions: list[str], max_length: int) -> Tensor:
    enc = tokenizer(captions, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    return enc["input_ids"]


@torch.no_grad()
def embed_captions(text_encoder: nn.Module, tokenizer, captions: list[str], max_length: int) -> Tensor:
    """``last_hidden_state`` per caption [N, T, D]; the empty caption is the unconditional one."""
    ids = tokenize(tokenizer, captions, max_length)
    return torch.cat([text_encoder(chunk).last_hidden_state for chunk in ids.split(256)])


# --- phase 1: the VAE ----------------------------------------------------------------------------


def train_vae(vae: nn.Module, pixels: Tensor, budget: VAEBudget, generator: torch.Generator, log: list) -> float:
    """KL-regularised autoencoder; returns the scaling factor 1 / std of the posterior modes."""
    optimiser = torch.optim.AdamW(vae.parameters(), lr=budget.lr, weight_decay=0.0)
    vae.train()
    for step in range(1, budget.steps + 1):
        batch = pixels[torch.randint(len(pixels), (budget.batch_size,), generator=generator)]
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample(generator)).sample
        mse = F.mse_loss(recon, batch)
        loss = mse + budget.kl_weight * posterior.kl().mean() / posterior.mean[0].numel()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        log.append(("vae", step, mse.item()))
    vae.eval()
    with torch.no_grad():
        modes = torch.cat([vae.encode(b).latent_dist.mode() for b in pixels.split(128)])
    return float(1.0 / modes.std())


@torch.no_grad()
def held_out_reconstruction(vae: nn.Module, pixels: Tensor) -> float:
    """MSE in [-1, 1] of decoding the posterior mode, on images the VAE never saw."""
    return round(float(F.mse_loss(vae.decode(vae.encode(pixels).latent_dist.mode()).sample, pixels)), 6)


# --- phase 2: the UNet ----------------------------------------------------------------------------


@dataclass
class LatentData:
    mean: Tensor  # posterior means [N, 4, s, s] (unscaled)
    std: Tensor
    scaling: float
    ids: Tensor  # caption token ids [N, T]
    empty: Tensor  # the empty caption's token ids [1, T]

    def sample(self, index: Tensor, generator: torch.Generator) -> Tensor:
        eps = torch.randn(self.mean[index].shape, generator=generator)
        return (self.mean[index] + self.std[index] * eps) * self.scaling


@torch.no_grad()
def encode_latents(vae: nn.Module, pixels: Tensor) -> tuple[Tensor, Tensor]:
    dists = [vae.encode(b).latent_dist for b in pixels.split(128)]
    return torch.cat([d.mean for d in dists]), torch.cat([d.std for d in dists])


def noise_scheduler(prediction_type: str = "epsilon"):
    from diffusers import DDPMScheduler

    return DDPMScheduler(**{**SD_SCHEDULE, "prediction_type": prediction_type})


def prediction_type_of(folder: Path) -> str:
    """What a backbone folder's UNet predicts (its ``scheduler/``; epsilon without one, as SD 1.x)."""
    config = Path(folder) / "scheduler" / "scheduler_config.json"
    return json.loads(config.read_text()).get("prediction_type", "epsilon") if config.is_file() else "epsilon"


def draw_timesteps(count: int, high_noise_fraction: float, total: int, generator: torch.Generator) -> Tensor:
    """Uniform timesteps, the first ``round(count * high_noise_fraction)`` of them from t >= 500."""
    steps = torch.randint(0, total, (count,), generator=generator)
    high = round(count * high_noise_fraction)
    if high:
        steps[:high] = torch.randint(HIGH_NOISE, total, (high,), generator=generator)
    return steps


def target_of(scheduler, latents: Tensor, noise: Tensor, steps: Tensor) -> Tensor:
    """What the UNet predicts: the noise (epsilon) or the velocity (v-prediction)."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, steps)
    return noise


def denoising_loss(
    unet: nn.Module, scheduler, latents: Tensor, text: Tensor, generator: torch.Generator, high_noise_fraction: float = 0.0
) -> Tensor:
    """MSE of the scheduler's prediction type at drawn timesteps."""
    noise = torch.randn(latents.shape, generator=generator)
    steps = draw_timesteps(len(latents), high_noise_fraction, scheduler.config.num_train_timesteps, generator)
    noisy = scheduler.add_noise(latents, noise, steps)
    target = target_of(scheduler, latents, noise, steps)
    return F.mse_loss(unet(noisy, steps, encoder_hidden_states=text).sample, target)


def train_unet(
    unet: nn.Module, text_encoder: nn.Module, data: LatentData, run: PretrainRun, generator: torch.Generator, log: list, save
) -> None:
    """Train to the last checkpoint's step count, calling ``save(backbone)`` at each checkpoint.
    With ``train_text_encoder`` the text encoder is optimised with the UNet; else it stays frozen."""
    budget, scheduler = run.spec.unet, noise_scheduler(run.spec.unet.prediction_type)
    trained = [unet, text_encoder] if budget.train_text_encoder else [unet]
    optimiser = torch.optim.AdamW([p for m in trained for p in m.parameters()], lr=budget.lr, weight_decay=0.01)
    at = {steps: name for name, steps in run.checkpoints.items()}
    total = max(at)
    if budget.lr_schedule == "cosine":
        decay = lambda step: 0.5 * (1 + math.cos(math.pi * step / total))  # noqa: E731
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, decay)
    train_count = run.spec.images
    for module in trained:
        module.train()
    for step in range(1, total + 1):
        index = torch.randint(train_count, (budget.batch_size,), generator=generator)
        drop = torch.rand(budget.batch_size, generator=generator) < budget.caption_dropout
        ids = torch.where(drop[:, None], data.empty, data.ids[index])
        with torch.set_grad_enabled(budget.train_text_encoder):
            text = text_encoder(ids).last_hidden_state
        latents = data.sample(index, generator)
        loss = denoising_loss(unet, scheduler, latents, text, generator, budget.high_noise_fraction)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if budget.lr_schedule == "cosine":
            schedule.step()
        log.append(("unet", step, loss.item()))
        if step in at:
            for module in trained:
                module.eval()
            save(at[step])
            for module in trained:
                module.train()


@torch.no_grad()
def held_out_losses(unet: nn.Module, text_encoder: nn.Module, data: LatentData, run: PretrainRun) -> dict[str, float]:
    """Denoising loss on the held-out images with their captions, the empty caption and
    shuffled captions, at the same noise and timesteps: the gaps measure the use of the text."""
    index = torch.arange(run.spec.images, len(data.mean))
    generator = torch.Generator().manual_seed(run.spec.seed + 1)
    latents = data.sample(index, generator)
    shuffled = index[torch.randperm(len(index), generator=generator)]
    texts = {
        "captioned": text_encoder(data.ids[index]).last_hidden_state,
        "empty": text_encoder(data.empty.expand(len(index), -1)).last_hidden_state,
        "shuffled": text_encoder(data.ids[shuffled]).last_hidden_state,
    }
    scheduler, seed = noise_scheduler(run.spec.unet.prediction_type), run.spec.seed + 2
    return {
        label: round(float(denoising_loss(unet, scheduler, latents, text, torch.Generator().manual_seed(seed))), 6)
        for label, text in texts.items()
    }


# --- the stage ------------------------------------------------------------------------------------


def pretrain(run: PretrainRun, out: Path) -> Path:
    """Run both phases and write the checkpoints, the loss curve and the summary under ``out``."""
    torch.manual_seed(run.tiny.seed)  # the `architecture` backbone's initial weights exactly
    unet, vae, text_encoder = tiny_architecture(run.tiny).instantiate()
    text_encoder.eval()
    generator = torch.Generator().manual_seed(run.spec.seed)
    pixels, captions = scenes_tensor(run)
    log: list[tuple[str, int, float]] = []
    scaling = train_vae(vae, pixels[: run.spec.images], run.spec.vae, generator, log)
    vae.register_to_config(scaling_factor=round(scaling, 5))

    def write(tmp: Path) -> None:
        ids = tokenize(clip_tokenizer(run.tiny.max_length), [*captions, ""], run.tiny.max_length)
        mean, std = encode_latents(vae, pixels)
        data = LatentData(mean, std, vae.config.scaling_factor, ids[:-1], ids[-1:])
        evaluation: dict[str, dict] = {}

        def save(name: str) -> None:
            folder = tmp / name
            unet.save_pretrained(folder / "unet")
            vae.save_pretrained(folder / "vae")
            text_encoder.save_pretrained(folder / "text_encoder")
            noise_scheduler(run.spec.unet.prediction_type).save_pretrained(folder / "scheduler")
            write_tokenizer(folder / "tokenizer", run.tiny.max_length)
            write_info(folder, backbone_info(run, name))
            evaluation[name] = {"unet_steps": run.checkpoints[name], **held_out_losses(unet, text_encoder, data, run)}

        train_unet(unet, text_encoder, data, run, generator, log, save)
        write_loss_csv(tmp / "loss.csv", log)
        summary = {
            "run": run.name,
            "vae_scaling_factor": vae.config.scaling_factor,
            "vae_held_out_mse": held_out_reconstruction(vae, pixels[run.spec.images :]),
            "checkpoints": evaluation,
        }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")

    return atomic_folder(Path(out), write, "pretrain-backbone")


def backbone_info(run: PretrainRun, name: str) -> dict:
    steps = run.checkpoints[name]
    return {
        "name": name,
        "source": "pretrained",
        "revision": f"pretrained (run {run.name}, seed {run.spec.seed}, {steps} UNet steps)",
        "tiny": asdict(run.tiny),
        "pretraining": {"run": run.name, "unet_steps": steps, **asdict(run.spec)},
    }


def write_loss_csv(path: Path, log: list[tuple[str, int, float]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["phase", "step", "loss"])
        writer.writerows((phase, step, f"{loss:.6f}") for phase, step, loss in log)
