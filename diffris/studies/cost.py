"""``diffris measure-cost``: what every variant costs — parameters, FLOPs, training memory and
inference latency — the model-zoo table the paper does not give.

Each experiment of ``--experiments`` (in that order) is built at one of two architectures:

- ``scale``: the sizes of ``--scale`` (``scales.<scale>.model``, ``image_size``) on the
  architecture of the backbone that scale maps the experiment's SD version to (mini: the tiny
  SD-shaped backbone of its pretraining run);
- ``paper``: ``scales.paper``: the paper's model sizes at 512 px on SD 1.x's architecture (the
  shapes of the Hub backbones, built here with random weights: no download, no files).

Cost does not depend on weight values, so nothing is loaded: the deterministic numbers come from
the model built on the ``meta`` device (shapes only, no memory, seconds even for SD 1.x) and go
to ``--out``, the same bytes on every machine:

- parameters: trainable (``requires_grad``) and frozen, and the trainable ones per head;
- FLOPs per sample at batch 1, counted by ``torch.utils.flop_counter.FlopCounterMode``
  (matrix products, convolutions and attention; element-wise ops are not counted): the inference
  forward from pixels and tokens (split into VAE encoder, text encoder, UNet and the trainable
  heads), and a training step (forward in training mode with the loss, plus backward; AdamW's
  element-wise update is not counted);
- training memory of one step at batch 1 in fp32 without a feature cache, accounted as weights
  (parameters and buffers) + gradients of the trainable parameters + AdamW's two moments (2x the
  trainable parameters) + the tensors autograd saves for backward (each storage once, weights
  excluded). Attention is accounted as the fused kernels PyTorch runs on CPU and CUDA save it
  (inputs, output and log-sum-exp; on meta tensors torch would take the math path, which keeps
  every attention matrix). Transient buffers (a layer's workspace, activation gradients during
  backward, the allocator's rounding) are not included: the sum is a lower bound of the peak.

Machine-dependent numbers go to ``--timings`` (a benchmarks file that names the device): the
latency of one image (batch 1, ``torch.inference_mode``, the forward and the argmax, after
``--warmup`` passes; median, min and max over ``--repeats``) with random weights of the real
architecture, and on a GPU the measured peak of one real training step (forward, loss, backward,
AdamW step after ``torch.cuda.reset_peak_memory_stats``; ``max_memory_allocated``). On a CPU that
cell stays empty: the process's peak RSS only grows, so after the first variant it would not be
the step's own, and it would include the allocator's caching; the accounting stands instead.
Threads that the machine's other load deschedules stall their siblings: on a shared 2-core machine
the 64 px variants took 0.1-4.5 s per image with 2 threads against 55-68 ms with 1.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import io
import itertools
import os
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from diffris.errors import ConfigError
from diffris.studies.cost_build import Target, build_variant, example_batch, measure_timings, mib, variant_configs

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

    from diffris.models.model import DiffRIS

ARCHITECTURES = ("scale", "paper")
PAPER_SCALE = "paper"  # the scale that holds the paper's sizes (params.yaml `scales.paper`)
HEADS = ("cp_adapter", "neck", "decoder")
BACKBONE_PARTS = ("vae", "text", "unet")  # the frozen networks: VAE encoder, text encoder, UNet

COLUMNS = (
    "experiment", "architecture", "backbone", "decoder", "image_size",
    "trainable_params", "frozen_params", *(f"{head}_params" for head in HEADS),
    "forward_gflops", *(f"{part}_gflops" for part in BACKBONE_PARTS), "heads_gflops", "train_step_gflops",
    "weights_mib", "grads_mib", "optimizer_mib", "activations_mib", "train_memory_mib",
)  # fmt: skip
TIMING_COLUMNS = (
    "experiment", "architecture", "image_size", "device_kind", "device", "torch", "cpu_isa", "threads",
    "warmup", "repeats", "latency_ms_median", "latency_ms_min", "latency_ms_max", "train_peak_mib",
)  # fmt: skip



def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "measure-cost",
        help="parameters, FLOPs, training memory and latency of each variant (model-zoo table)",
        description="Writes OUT: per experiment, trainable and frozen parameters, FLOPs per sample and an "
        "accounting of training memory, counted on the meta device (the same bytes on any machine); and "
        "TIMINGS: the latency per image at batch 1 and, on a GPU, the measured peak of a training step, with "
        "the device's name. --architecture paper builds scales.paper's sizes (512 px, SD 1.x's shapes, random "
        "weights, no download). See the module docstring of diffris.studies.cost for what is counted how.",
    )
    add = parser.add_argument
    add("--experiments", required=True, help="comma-separated keys of params.yaml `experiments`, in the rows' order")
    add("--out", required=True, type=Path,
        help="CSV of the deterministic numbers (results/<scale>/studies/cost-<architecture>.csv)")
    add("--timings", type=Path,
        help="CSV of latency and measured memory (benchmarks/results/studies-cost-<scale>-<architecture>.csv)")
    add("--no-timing", action="store_true", help="only the deterministic numbers (no weights built, no --timings)")
    add("--architecture", choices=ARCHITECTURES, default="scale", help="the scale's sizes or the paper's (default: scale)")
    add("--scale", help="default: params.yaml's `scale`")
    add("--params", type=Path, help="params.yaml (default: the repository's)")
    add("--figure", type=Path, help="also draw parameters, FLOPs and training memory per variant (PNG)")
    add("--warmup", type=int, default=1, help="untimed passes per variant (default: 1)")
    add("--repeats", type=int, default=3, help="timed passes per variant (default: 3)")
    add("--threads", type=int, default=len(os.sched_getaffinity(0)),
        help="CPU threads for the timed passes (default: all cores; on a machine that others load, use 1)")
    add("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to time (default: cuda if there is one)")
    parser.set_defaults(handler=run_measure_cost)


def run_measure_cost(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from diffris.config import load_params

    check_arguments(args)
    params = load_params(args.params)
    target = resolve_target(params, args.scale or params["scale"], args.architecture)
    experiments = parse_experiments(params, args.experiments)
    start = time.perf_counter()
    rows = measure_counts(params, target, experiments)
    write_csv(args.out, COLUMNS, rows)
    print(f"measure-cost: {len(rows)} variants -> {args.out}")
    timings = []
    if not args.no_timing:
        timings = measure_timings(params, target, experiments, args)
        write_csv(args.timings, TIMING_COLUMNS, timings)
        print(f"measure-cost: timings on {timings[0]['device']} -> {args.timings}")
    if args.figure:
        from diffris.report.figures import save_figure

        title = f"Cost per variant, {target.architecture} architecture ({target.scale} sizes, {target.image_size} px)"
        save_figure(plot_cost(rows, title), args.figure)
        print(f"measure-cost: figure -> {args.figure}")
    print(tabulate(summary_rows(rows, timings), headers="keys", disable_numparse=True))
    print(f"measure-cost: {time.perf_counter() - start:.1f} s")
    return 0


def check_arguments(args: argparse.Namespace) -> None:
    if not args.no_timing and args.timings is None:
        raise ConfigError("--timings: needed unless --no-timing (latency goes to a separate, machine-dependent file)")
    if args.no_timing and args.timings is not None:
        raise ConfigError("--timings: given with --no-timing; drop one of them")
    if args.warmup < 0 or args.repeats < 1 or args.threads < 1:
        raise ConfigError(
            f"need --warmup >= 0, --repeats >= 1 and --threads >= 1, got {args.warmup}, {args.repeats}, {args.threads}"
        )
    outputs = [p.resolve() for p in (args.out, args.timings, args.figure) if p is not None]
    if len(set(outputs)) < len(outputs):
        raise ConfigError("--out, --timings and --figure must be different files")


def resolve_target(params: dict, scale: str, architecture: str) -> Target:
    from diffris.config import scale_params

    built = scale if architecture == "scale" else PAPER_SCALE
    return Target(architecture, built, scale_params(params, built)["image_size"])


def parse_experiments(params: dict, text: str) -> list[str]:
    """The names of ``--experiments``, each a key of params.yaml ``experiments``, no repeats."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = params.get("experiments") or {}
    if not names:
        raise ConfigError("--experiments: no experiment named")
    for name in names:
        if name not in known:
            raise ConfigError(
                f"--experiments: {name!r} is not one of params.yaml `experiments` ({', '.join(known)})"
            )
    repeated = [name for name in names if names.count(name) > 1]
    if repeated:
        raise ConfigError(f"--experiments: {repeated[0]!r} is named twice")
    return names


# --- deterministic numbers (meta device) --------------------------------------------------------


def measure_counts(params: dict, target: Target, experiments: list[str]) -> list[dict[str, str]]:
    """One formatted row of ``COLUMNS`` per experiment, from the models built on meta."""
    import torch
    from tqdm.auto import tqdm

    meta, backbones, rows = torch.device("meta"), {}, []
    configs = variant_configs(params, target, experiments)
    for name, config in zip(tqdm(experiments, desc="measure-cost: counts", unit="variant"), configs):
        model = build_variant(params, config, meta, backbones)
        inputs, mask = example_batch(model, target.image_size, meta)
        counts = model.parameter_counts()
        flops = forward_flops(model, inputs)
        step_flops, saved = training_step_cost(model, inputs, mask)
        memory = memory_accounting(model, saved)
        rows.append(
            {
                "experiment": name,
                "architecture": target.architecture,
                "backbone": config.backbone,
                "decoder": config.decoder,
                "image_size": str(target.image_size),
                "trainable_params": str(sum(t for t, _ in counts.values())),
                "frozen_params": str(sum(f for _, f in counts.values())),
                **{f"{head}_params": str(counts[head][0]) for head in HEADS},
                **{f"{key}_gflops": gflops(value) for key, value in flops.items()},
                "train_step_gflops": gflops(step_flops),
                **{f"{key}_mib": mib(value) for key, value in memory.items()},
            }
        )
    return rows


def gflops(flops: int) -> str:
    return f"{flops / 1e9:.6f}"


def forward_flops(model: DiffRIS, inputs: dict) -> dict[str, int]:
    """FLOPs of the inference forward: in total, per frozen network and for the trainable heads."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    # Gradients stay enabled (the same FLOPs, nothing is stored on meta): FlopCounterMode's module
    # tracker fails under no_grad when a parameter is a submodule's input (PCMRD's query tokens).
    with fused_attention(), FlopCounterMode(display=False) as counter:
        model(**inputs)
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    root, total = type(model).__name__, counter.get_total_flops()
    text, unet = (per_module.get(f"{root}.backbone.{module}", 0) for module in ("text_encoder", "unet"))
    heads = sum(per_module.get(f"{root}.{head}", 0) for head in HEADS)
    # The VAE runs through ``vae.encode``, not a module call, so the tracker files its FLOPs under
    # no name of its own; they are what the forward counts outside the other three.
    return {"forward": total, "vae": total - text - unet - heads, "text": text, "unet": unet, "heads": heads}


def training_step_cost(model: DiffRIS, inputs: dict, mask: torch.Tensor) -> tuple[int, int]:
    """FLOPs of a training step's forward, loss and backward, and the bytes of the tensors that
    autograd holds for the backward when it starts: each storage once, the model's weights left
    out, and only what is still alive then (a side branch of the graph, e.g. a diagnostic, frees
    its tensors; counting those would also let their storages' addresses be reused)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    weights = {storage_key(t) for t in itertools.chain(model.parameters(), model.buffers())}
    packed: list[weakref.ref] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        packed.append(weakref.ref(tensor))
        return tensor

    with fused_attention(), FlopCounterMode(display=False) as counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = model.loss(model(**inputs), mask)
        gc.collect()  # a saved output refers to itself through its grad_fn: freed only by the collector
        alive = [tensor for ref in packed if (tensor := ref()) is not None]
        saved = {storage_key(t): t.untyped_storage().nbytes() for t in alive if storage_key(t) not in weights}
        del alive
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops(), sum(saved.values())


def storage_key(tensor: torch.Tensor) -> int:
    """Identifies a tensor's storage while it is alive (meta tensors have no data pointer)."""
    return tensor.untyped_storage()._cdata


def memory_accounting(model: DiffRIS, saved_bytes: int) -> dict[str, int]:
    """Bytes of one training step: weights, gradients, AdamW moments, saved activations, total."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    weights = sum(t.numel() * t.element_size() for t in tensors)
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    parts = {"weights": weights, "grads": trainable, "optimizer": 2 * trainable, "activations": saved_bytes}
    return {**parts, "train_memory": sum(parts.values())}


@contextlib.contextmanager
def fused_attention():
    """On meta tensors, route ``F.scaled_dot_product_attention`` to the memory-efficient fused
    kernel, which saves what the kernels of real CPU and CUDA runs save (inputs, output,
    log-sum-exp) and is counted with the same FLOP formula; torch would otherwise take the math
    path on meta and save every attention matrix. Other devices are left alone."""
    import torch
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention

    def fused(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if query.device.type != "meta" or query.ndim != 4 or enable_gqa:
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                            scale=scale, enable_gqa=enable_gqa)  # fmt: skip
        bias = None
        if attn_mask is not None:  # an additive bias of the fused kernel's shape; on meta only shapes matter
            bias = torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device)
            bias = bias.expand(*query.shape[:-1], key.shape[-2])
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
        return torch.ops.aten._scaled_dot_product_efficient_attention(
            query, key, value, bias, grad, dropout_p, is_causal, scale=scale
        )[0]

    F.scaled_dot_product_attention = fused
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


# --- output -------------------------------------------------------------------------------------


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    from diffris.fileio import atomic_write

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([row[column] for column in columns] for row in rows)
    atomic_write(Path(path), lambda tmp: tmp.write_text(buffer.getvalue()))


def summary_rows(rows: list[dict[str, str]], timings: list[dict[str, str]]) -> list[dict[str, str]]:
    """The console table: millions of parameters, GFLOPs, MiB and the median latency."""
    latency = {row["experiment"]: row["latency_ms_median"] for row in timings}
    return [
        {
            "experiment": row["experiment"],
            "trainable M": f"{int(row['trainable_params']) / 1e6:.3f}",
            "frozen M": f"{int(row['frozen_params']) / 1e6:.1f}",
            "forward GFLOPs": f"{float(row['forward_gflops']):.2f}",
            "heads GFLOPs": f"{float(row['heads_gflops']):.2f}",
            "train step GFLOPs": f"{float(row['train_step_gflops']):.2f}",
            "train memory MiB": f"{float(row['train_memory_mib']):.0f}",
            **({"latency ms": latency[row["experiment"]]} if timings else {}),
        }
        for row in rows
    ]


def plot_cost(rows: list[dict[str, str]], title: str) -> Figure:
    """One bar per variant (in the given order) for trainable parameters, the heads' forward FLOPs,
    a training step's FLOPs and the accounted training memory (weights, gradients with AdamW's
    moments, saved activations stacked). Deterministic numbers only: the PNG is the same on every
    machine."""
    from matplotlib.figure import Figure

    names = [row["experiment"] for row in rows]
    y = list(range(len(rows)))

    def values(column: str, scale: float = 1.0) -> list[float]:
        return [float(row[column]) * scale for row in rows]

    fig = Figure(figsize=(14, 0.35 * len(rows) + 1.6))
    axes = fig.subplots(1, 4, sharey=True)
    bars = (
        (values("trainable_params", 1e-6), "trainable parameters (millions)"),
        (values("heads_gflops"), "forward GFLOPs of the trainable heads"),
        (values("train_step_gflops"), "GFLOPs of a training step"),
    )
    for ax, (widths, label) in zip(axes, bars):
        ax.barh(y, widths, color="#1f77b4")
        ax.set_xlabel(label)
    left = [0.0] * len(rows)
    memory = (("weights_mib", "weights"), ("grads_mib", "gradients"), ("optimizer_mib", "AdamW moments"),
              ("activations_mib", "saved activations"))  # fmt: skip
    for (column, label), color in zip(memory, ("#999999", "#ff7f0e", "#ffbb78", "#2ca02c")):
        widths = values(column)
        axes[3].barh(y, widths, left=left, color=color, label=label)
        left = [a + b for a, b in zip(left, widths)]
    axes[3].set_xlabel("training memory, MiB (accounted)")
    axes[3].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)
    axes[0].set_yticks(y, names)
    axes[0].invert_yaxis()
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
