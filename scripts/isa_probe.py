"""Hash a small, fixed torch computation on the CPU, to compare instruction sets (docs/reproducibility.md).

    python scripts/isa_probe.py [--backbone-dir models/backbones/tiny-random] [--skip-env]

Prints one JSON object: torch's CPU capability in force, whether the CPU this process sees has
AVX-512, and the sha256 of each output: ``numpy`` (numpy's SIMD maths: arctan2, exp, sin, ...),
``randn`` (torch's CPU generator), ``ops`` (conv + GroupNorm + SiLU + linear + attention softmax,
forward and backward) and, with ``--backbone-dir``, ``vae`` (the VAE posterior mode of two fixed
64 px images) and ``unet`` (one UNet pass). Inputs come from integer arithmetic only, so that
nothing but the kernels under test can differ. The CPU pin of ``diffris.determinism`` is applied
before torch is imported, as ``python -m diffris`` does, unless ``--skip-env`` is given (then the
environment decides: use it to run an unpinned or a hand-pinned comparison).

Run it under an emulated CPU with qemu-user, e.g. ``qemu-x86_64 -cpu EPYC-Rome .venv/bin/python
scripts/isa_probe.py`` (tests/test_determinism.py does), and compare the hashes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time


PARTS = ("numpy", "randn", "ops", "vae", "unet")
ENV_SHOWN = ("DIFFRIS_CPU_PIN", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")


def fixed(shape: tuple[int, ...], seed: int):
    """Values in [-1, 1] from an integer hash of the element index (exact integer arithmetic, then
    one correctly rounded division), so that they are the same bytes on any CPU."""
    import numpy as np

    n = int(np.prod(shape))
    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)  # splitmix64
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    values = (z % np.uint64(2001)).astype(np.int64) - 1000
    return (values.astype(np.float32) / np.float32(1000.0)).reshape(shape)


def digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone-dir", help="a tiny backbone folder (fetch-weights): also hash its VAE and UNet")
    parser.add_argument("--skip-env", action="store_true", help="no diffris CPU pin: the environment decides")
    parser.add_argument("--only", choices=PARTS, action="append", help="parts to run (repeatable; default: all)")
    args = parser.parse_args()
    if not args.skip_env:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
        from diffris.determinism import pin_cpu

        pin_cpu()
    import torch

    torch.set_num_threads(1)
    parts = set(args.only or PARTS)
    start = time.perf_counter()

    def lap(name: str) -> None:
        print(f"isa_probe: {name} done at {time.perf_counter() - start:.1f} s", file=sys.stderr)

    import numpy as np

    # the CPU as seen by this process (numpy's detection; NPY_DISABLE_CPU_FEATURES does not hide it)
    features = np._core._multiarray_umath.__cpu_features__
    result = {"capability": torch.backends.cpu.get_cpu_capability(), "cpu_avx512f": bool(features.get("AVX512F"))}
    result["env"] = {k: os.environ.get(k) for k in ENV_SHOWN}
    if "numpy" in parts:  # numpy's SIMD loops (the synthetic scenes use arctan2, sin, cos, hypot)
        a, b = fixed((4096,), 10).astype(np.float64) * 4, fixed((4096,), 11).astype(np.float64) * 4
        h = hashlib.sha256()
        for values in (np.arctan2(a, b), np.exp(a), np.log1p(np.abs(a)), np.sin(a), np.hypot(a, b), np.tanh(a)):
            h.update(values.tobytes())
            h.update(values.astype(np.float32).tobytes())
        for values in (np.exp(a.astype(np.float32)), np.sin(a.astype(np.float32)), np.tanh(a.astype(np.float32))):
            h.update(values.tobytes())
        result["numpy"] = h.hexdigest()
        lap("numpy")
    if "randn" in parts:
        g = torch.Generator().manual_seed(0)
        result["randn"] = digest(torch.randn(4096, generator=g), torch.rand(4096, generator=g))
        lap("randn")
    if "ops" in parts:
        t = lambda shape, seed: torch.from_numpy(fixed(shape, seed))  # noqa: E731
        x = t((2, 16, 16, 16), 1).requires_grad_()
        conv = torch.nn.Conv2d(16, 32, 3, padding=1)
        norm = torch.nn.GroupNorm(8, 32)
        lin = torch.nn.Linear(32, 48)
        with torch.no_grad():
            conv.weight.copy_(t(conv.weight.shape, 2) * 0.1)
            conv.bias.copy_(t(conv.bias.shape, 3))
            lin.weight.copy_(t(lin.weight.shape, 4) * 0.2)
            lin.bias.copy_(t(lin.bias.shape, 5))
        h = torch.nn.functional.silu(norm(conv(x)))  # [2, 32, 16, 16]
        tokens = lin(h.flatten(2).transpose(1, 2))  # [2, 256, 48]
        attn = torch.softmax(tokens @ tokens.transpose(1, 2) / 48**0.5, dim=-1)
        out = (attn @ tokens).tanh()
        loss = (out * t(out.shape, 6)).sum() + torch.logsumexp(out, dim=-1).mean()
        loss.backward()
        result["ops"] = digest(out, x.grad, conv.weight.grad, lin.weight.grad, norm.weight.grad)
        lap("ops")
    if args.backbone_dir and parts & {"vae", "unet"}:
        from diffusers import AutoencoderKL, UNet2DConditionModel

        with torch.no_grad():
            if "vae" in parts:
                vae = AutoencoderKL.from_pretrained(os.path.join(args.backbone_dir, "vae")).eval()
                pixels = torch.from_numpy(fixed((2, 3, 64, 64), 7))
                result["vae"] = digest(vae.encode(pixels).latent_dist.mode())
                lap("vae")
            if "unet" in parts:
                unet = UNet2DConditionModel.from_pretrained(os.path.join(args.backbone_dir, "unet")).eval()
                c = unet.config
                latents = torch.from_numpy(fixed((2, c.in_channels, 8, 8), 8))
                text = torch.from_numpy(fixed((2, 32, c.cross_attention_dim), 9))
                steps = torch.tensor([100, 500])
                result["unet"] = digest(unet(latents, steps, encoder_hidden_states=text).sample)
                lap("unet")
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
