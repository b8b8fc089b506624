"""``diffris cache-features``."""

from __future__ import annotations

import argparse
from pathlib import Path

import diffris.features


def register(sub: argparse._SubParsersAction) -> None:
    cache = sub.add_parser(
        "cache-features",
        help="compute a prepared dataset's frozen features once: VAE latents, CLIP text, optionally UNet taps",
        description=diffris.features.__doc__.split("\n\n")[1],
    )
    cache.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    cache.add_argument("--backbone-dir", required=True, type=Path, help="backbone folder (fetch-weights)")
    cache.add_argument("--out", required=True, type=Path, help="cache folder to write")
    cache.add_argument("--text-length", required=True, type=int, help="CLIP tokens (the model's text_max_length)")
    cache.add_argument(
        "--unet-taps", action="store_true",
        help="also cache the UNet taps (valid for models whose CP-adapter is off)",
    )  # fmt: skip
    cache.add_argument("--timestep", type=int, default=1, help="UNet timestep of the taps (default: 1)")
    cache.add_argument(
        "--latent-scaling", action=argparse.BooleanOptionalAction, default=True,
        help="the taps' UNet input is the latents times the VAE scaling factor (default: yes)",
    )  # fmt: skip
    cache.add_argument("--reuse-latents", type=Path, help="another backbone's cache whose latents to reuse if its VAE is the same")
    cache.add_argument("--batch-size", type=int, default=32, help="samples per forward (default: 32)")
    cache.add_argument("--cpu-threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    cache.set_defaults(handler=run_cache_features)


def run_cache_features(args: argparse.Namespace) -> int:
    from diffris.features.build import CacheRequest, build_cache
    from diffris.features.checks import TapSettings, read_cache_info
    from diffris.determinism import set_cpu_threads

    set_cpu_threads(args.cpu_threads)
    taps = TapSettings(args.timestep, args.latent_scaling) if args.unet_taps else None
    request = CacheRequest(
        data=args.data, backbone_dir=args.backbone_dir, out=args.out, text_length=args.text_length,
        taps=taps, reuse_latents=args.reuse_latents, batch_size=args.batch_size,
    )  # fmt: skip
    out = build_cache(request)
    info = read_cache_info(out)
    counts = ", ".join(f"{s} {v['num_samples']}" for s, v in info["splits"].items())
    print(f"written: {out} ({counts}; text length {args.text_length}; UNet taps: {'yes' if taps else 'no'})")
    return 0
