"""Training-step and evaluation throughput of DiffRIS, naive path against optimised path.

    python benchmarks/throughput.py --scale mini --backbone-dir models/backbones/tiny-sd-1-5 \\
        --out benchmarks/results/mini-cpu.json
    python benchmarks/throughput.py --scale paper --random-backbone sd-random --batch-size 1 \\
        --steps 2 --out benchmarks/results/paper-sd1-random-cpu.json

For each experiment (``--experiments``), in a fresh process per measurement (so that peak memory
is that measurement's own):

- naive: the frozen VAE and text encoder run in every step (no feature cache), fp32, none of the
  fast paths;
- optimised: the step reads cached features (latents and text; the UNet taps too for a model whose
  CP-adapter is off, with ``--unet-taps``), with the scale's fast paths from ``scales.<scale>.train``
  (channels-last, gradient checkpointing, torch.compile) and bf16 autocast where the GPU supports it.

A training step is what ``diffris train`` does per micro-batch: forward, loss, backward, AdamW
step. An evaluation step is a no-grad forward and the argmax. Inputs are random images and token
ids of the scale's sizes: throughput does not depend on their values. Data loading is not part of
the step (cached features are memory-mapped reads). ``cache`` is the one-off cost of computing the
features (samples/s), which ``diffris plan`` adds once per (dataset, backbone).

Peak memory is torch's peak allocated GPU memory, or on a CPU the process's peak resident set
(weights included). Memory per sample is the slope between ``--batch-size`` and twice it.
The table and a JSON file (``--out``, read by ``diffris plan``) hold the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PATHS = ("naive", "optimised")

from diffris.determinism import pin_cpu  # noqa: E402  (before torch: the kernels the pipeline uses)

pin_cpu()


# --- one measurement (a worker process) --------------------------------------------------------


def build(args: argparse.Namespace, experiment: str):
    import torch

    from diffris.pretraining.backbones import architecture_of
    from diffris.config import load_params, scale_params
    from diffris.models import config_from_params
    from diffris.models.backbone import FrozenBackbone
    from diffris.models.model import DiffRIS

    params = load_params(args.params)
    config = config_from_params(params, experiment, args.scale)
    torch.manual_seed(0)
    if args.backbone_dir:
        backbone = FrozenBackbone.from_folder(args.backbone_dir)
    else:
        entry = params["backbones"][args.random_backbone]
        backbone = FrozenBackbone.from_architecture(architecture_of(entry, args.random_backbone, params), config.backbone)
    model = DiffRIS(config, backbone)
    return model, scale_params(params, args.scale)


def random_batch(model, size: int, batch: int, device):
    import torch

    g = torch.Generator().manual_seed(0)
    length, vocab = model.config.text_max_length, model.backbone.text_encoder.config.vocab_size
    pixels = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    input_ids = torch.randint(0, vocab, (batch, length), generator=g)
    lengths = torch.randint(4, length + 1, (batch,), generator=g)
    attention_mask = (torch.arange(length)[None] < lengths[:, None]).long()
    masks = torch.rand(batch, size, size, generator=g) < 0.1
    return pixels.to(device), input_ids.to(device), attention_mask.to(device), masks.to(device)


def measure(args: argparse.Namespace) -> dict:
    """Throughput and peak memory of one (experiment, path, batch size)."""
    import torch

    from diffris.models.model import BackboneFeatures
    from diffris.training.run_folder import mixed_precision
    from diffris.training.trainer import param_groups

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, settings = build(args, args.worker_experiment)
    model.to(device).train()
    train, optimised = settings["train"], args.worker_path == "optimised"
    bf16 = optimised and mixed_precision(train["mixed_precision"]) == "bf16"
    fast = {k: optimised and bool(train.get(k, False)) for k in ("channels_last", "gradient_checkpointing", "compile")}
    model.backbone.use_fast_paths(fast["channels_last"], fast["gradient_checkpointing"], fast["compile"])
    fmt = torch.channels_last if fast["channels_last"] else torch.contiguous_format
    pixels, input_ids, attention_mask, masks = random_batch(model, settings["image_size"], args.worker_batch, device)
    pixels = pixels.contiguous(memory_format=fmt)
    optimizer = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-5)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    cache_rate, inputs = None, {"pixel_values": pixels, "input_ids": input_ids, "attention_mask": attention_mask}
    if optimised:
        start = _sync_time(device)
        features = model.backbone_features(pixels, input_ids, attention_mask)
        taps = None
        if args.unet_taps and model.unet_input_is_frozen:
            with torch.no_grad():
                taps = model.encode_features(features)[1]
        cache_rate = args.worker_batch / (_sync_time(device) - start)  # one batch: a rough figure
        features = BackboneFeatures(features.text, attention_mask, features.image_size, features.latents, taps)
        inputs = {"features": features.to(device, fmt)}

    def train_step() -> None:
        with autocast:
            loss = model.loss(model(**inputs), masks)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def eval_step() -> None:
        with torch.no_grad(), autocast:
            model(**inputs).argmax(dim=1)

    model.eval()
    eval_rate, eval_cpu_rate, eval_peak = _rate(eval_step, args, device)
    model.train()
    train_rate, train_cpu_rate, train_peak = _rate(train_step, args, device)
    return {
        "train_samples_per_s": train_rate,
        "eval_samples_per_s": eval_rate,
        "train_samples_per_cpu_s": train_cpu_rate,
        "eval_samples_per_cpu_s": eval_cpu_rate,
        "train_peak_mem_mb": train_peak,
        "eval_peak_mem_mb": eval_peak,
        "cache_samples_per_s": cache_rate,
        "settings": {"features": optimised, "unet_taps": optimised and args.unet_taps and model.unet_input_is_frozen,
                     "bf16_autocast": bf16, **fast},
    }  # fmt: skip


def _sync_time(device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def _rate(step, args: argparse.Namespace, device) -> tuple[float, float, float]:
    """Samples per second of wall time and of process CPU time over ``--steps`` steps after
    ``--warmup`` ones, and peak memory in MB. On a shared CPU the CPU-time rate of a 1-thread
    run is what an idle core would give; on a GPU only the wall-time rate means anything."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup):
        step()
    start, cpu_start = _sync_time(device), time.process_time()
    for _ in range(args.steps):
        step()
    samples = args.steps * args.worker_batch
    rate, cpu_rate = samples / (_sync_time(device) - start), samples / (time.process_time() - cpu_start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return rate, cpu_rate, peak


# --- the driver --------------------------------------------------------------------------------


def run_worker(args: argparse.Namespace, experiment: str, path: str, batch: int) -> dict:
    if not args.isolate:
        worker = argparse.Namespace(**{**vars(args), "worker_experiment": experiment, "worker_path": path, "worker_batch": batch})
        return measure(worker)
    cmd = [sys.executable, __file__, *args.forward, "--worker-experiment", experiment, "--worker-path", path,
           "--worker-batch", str(batch)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark worker {experiment}/{path}/batch {batch} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def device_name() -> tuple[str, str]:
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return "cpu", cpu


def benchmark(args: argparse.Namespace) -> dict:
    import torch

    kind, name = device_name()
    results = {
        "device_kind": kind,
        "device": name,
        "threads": args.threads if kind == "cpu" else None,
        "torch": torch.__version__,
        "scale": args.scale,
        "backbone": str(args.backbone_dir) if args.backbone_dir else f"{args.random_backbone} (random weights)",
        "batch_size": args.batch_size,
        "steps": args.steps,
        "experiments": {},
    }
    for experiment in args.experiments.split(","):
        entry = {}
        for path in PATHS:
            one = run_worker(args, experiment, path, args.batch_size)
            if args.memory_per_sample:
                two = run_worker(args, experiment, path, 2 * args.batch_size)
                one["train_mem_per_sample_mb"] = (two["train_peak_mem_mb"] - one["train_peak_mem_mb"]) / args.batch_size
                one["eval_mem_per_sample_mb"] = (two["eval_peak_mem_mb"] - one["eval_peak_mem_mb"]) / args.batch_size
            entry[path] = one
        results["experiments"][experiment] = entry
    return results


def table(results: dict) -> str:
    from tabulate import tabulate

    metrics = [
        ("train samples/s", "train_samples_per_s"),
        ("eval samples/s", "eval_samples_per_s"),
        ("train samples per CPU-second", "train_samples_per_cpu_s"),
        ("eval samples per CPU-second", "eval_samples_per_cpu_s"),
        ("train peak memory (MB)", "train_peak_mem_mb"),
        ("eval peak memory (MB)", "eval_peak_mem_mb"),
        ("train memory per sample (MB)", "train_mem_per_sample_mb"),
        ("eval memory per sample (MB)", "eval_mem_per_sample_mb"),
    ]
    rows = []
    for experiment, paths in results["experiments"].items():
        naive, fast = paths["naive"], paths["optimised"]
        for label, key in metrics:
            if key in naive:
                ratio = fast[key] / naive[key] if naive[key] else float("nan")
                rows.append([experiment, label, naive[key], fast[key], ratio])
        rows.append([experiment, "feature cache build samples/s", None, fast["cache_samples_per_s"], None])
    header = (
        f"device: {results['device_kind']} ({results['device']}"
        f"{', %d thread(s)' % results['threads'] if results['threads'] else ''}), torch {results['torch']}, "
        f"scale {results['scale']}, backbone {results['backbone']}, batch {results['batch_size']}"
    )
    body = tabulate(rows, headers=["experiment", "metric", "naive", "optimised", "ratio"], floatfmt=".3g", missingval="")
    return f"{header}\n{body}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="mini", help="sizes and train settings of this scale (params.yaml)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--backbone-dir", type=Path, help="a backbone folder (fetch-weights)")
    source.add_argument("--random-backbone", help="a params.yaml backbone, instantiated with random weights (no files)")
    parser.add_argument("--experiments", default="full", help="comma-separated experiments (default: full)")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per step (default: 8)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement (default: 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default: 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    parser.add_argument("--unet-taps", action="store_true", help="optimised path caches UNet taps where valid")
    parser.add_argument(
        "--memory-per-sample", action=argparse.BooleanOptionalAction, default=True,
        help="also measure at twice the batch for memory per sample (default: yes)",
    )  # fmt: skip
    parser.add_argument(
        "--isolate", action=argparse.BooleanOptionalAction, default=True,
        help="one process per measurement, so peak memory is its own (default: yes; "
        "--no-isolate is faster but its CPU peak memory is the running maximum)",
    )  # fmt: skip
    parser.add_argument("--params", type=Path, help="params.yaml (default: the repository's)")
    parser.add_argument("--out", type=Path, help="JSON file for the results (read by `diffris plan`)")
    parser.add_argument("--worker-experiment", help=argparse.SUPPRESS)
    parser.add_argument("--worker-path", help=argparse.SUPPRESS)
    parser.add_argument("--worker-batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.forward = [a for a in (argv if argv is not None else sys.argv[1:])]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker_path:
        print(json.dumps(measure(args)))
        return 0
    results = benchmark(args)
    print(table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
