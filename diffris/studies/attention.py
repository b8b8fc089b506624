"""Where the model looks: PCMRD's token assignment and the frozen UNet's cross-attention.

Two recorders (``diffris.studies.attention_capture``) read, without changing anything, every
OAQIL's assignment S_mask and the UNet's cross-attention probabilities per text token.

``analyse_split`` runs a model over a prepared split once (live backbone) and measures, per sample:

- per PCMRD stage, the *target token*: the query token whose assigned region has the largest IoU
  with the ground-truth mask (area-averaged to the stage's map; ties: lowest token index), and
  ``inside_share`` (share of its pixels inside the mask), ``inside_ratio`` (that share divided by
  the mask's area fraction: 1 = no better than anywhere), ``coverage`` (share of the mask it
  covers) and ``iou``;
- the cross-attention's ``in_mask_ratio`` at one stride (the layers at that resolution averaged):
  the attention mass of a group of text tokens inside the mask divided by the mask's area fraction
  (1 = no preference), for the ``head_noun`` (``head_noun``'s heuristic), all ``words``, the
  ``start`` token and the ``end_padding`` (end-of-text and pad tokens, which SD does not mask).

As a chance level, the ratios with the ``_rot180`` suffix repeat the measure against the mask
rotated by 180 degrees (for the assignment with the target token chosen anew for it, so that the
choice's own optimism is in both). Samples with an empty mask are left out of these ratios.
Each measure gets the mean over samples and a 95 % percentile bootstrap interval
(``diffris.report.intervals``), written as a CSV with fixed 4-decimal floats; the figure shows the
samples of the qualitative figures (Figs. 5-7).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffris.studies.attention_capture import (
    AttentionStudyError,
    CrossAttention,
    in_mask_ratio,
    mask_coverage,
    target_token,
    record_assignments,
    record_cross_attention,
    token_groups,
)

CSV_HEADER = ("part", "where", "measure", "n", "mean", "ci_low", "ci_high", "note")
TOKEN_GROUPS = ("head_noun", "words", "start", "end_padding")
CONTROL = "_rot180"  # the same measure against the mask rotated by 180 degrees: what chance gives
MAX_WORDS = 6  # word maps per figure row
DECIMALS = 4


# --- one pass over a split ---------------------------------------------------------------------


@dataclass
class SampleView:
    """What the figure shows of one sample."""

    index: int
    expression: str
    image: np.ndarray  # uint8 [S, S, 3]
    mask: np.ndarray  # bool [S, S]
    prediction: np.ndarray  # bool [S, S]
    iou: float
    stages: list[tuple[np.ndarray, int, dict[str, float]]] = field(default_factory=list)  # token map, target, measures
    words: list[tuple[str, np.ndarray, float, bool]] = field(default_factory=list)  # word, map, ratio, is head


@dataclass
class Analysis:
    values: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)  # (part, where, measure)
    views: list[SampleView] = field(default_factory=list)
    num_tokens: int = 0
    stride: int | None = None
    layers: tuple[str, ...] = ()
    strides: tuple[int, ...] = ()
    num_samples: int = 0

    def add(self, key: tuple[str, str, str], value: float) -> None:
        self.values.setdefault(key, []).append(value)


def layers_at(records: list[CrossAttention], image_size: int, stride: int | None) -> tuple[int, list[CrossAttention]]:
    """The stride asked for (default: the finest present) and the layers at it."""
    by_stride: dict[int, list[CrossAttention]] = {}
    for record in records:
        side = math.isqrt(record.probs.shape[1])
        by_stride.setdefault(image_size // side, []).append(record)
    if stride is None:
        stride = min(by_stride)
    if stride not in by_stride:
        raise AttentionStudyError(
            f"--attention-stride {stride}: the UNet has cross-attention at strides {sorted(by_stride)} only"
        )
    return stride, by_stride[stride]


def analyse_split(
    model,
    dataset,
    batch_size: int,
    device,
    keep: tuple[int, ...] = (),
    stride: int | None = None,
    autocast: bool = False,
) -> Analysis:
    """Run ``model`` over ``dataset`` (a ``PreparedSplit``) in order with both recorders on and
    collect the per-sample measures, and the views of the samples in ``keep``."""
    import torch
    from tqdm.auto import tqdm

    from diffris.features.datasets import model_inputs
    from diffris.training.metrics import sample_iou

    was_training = model.training
    model.eval()
    analysis = Analysis(num_samples=len(dataset))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    unet = model.backbone.unet
    with record_assignments(model) as stages, record_cross_attention(unet) as attention, torch.no_grad():
        for batch in tqdm(loader, desc="attention-maps", unit="batch", leave=False, dynamic_ncols=True):
            stages.clear()
            attention.clear()
            inputs = model_inputs(model, batch, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(**inputs)
            predictions = (logits.argmax(dim=1) == 1).cpu().numpy()
            masks = batch["mask"].numpy().astype(bool)
            image_size = masks.shape[-1]
            layers: list[CrossAttention] = []
            if attention:
                analysis.stride, layers = layers_at(attention, image_size, stride)
                analysis.layers = tuple(r.layer for r in layers)
                analysis.strides = tuple(sorted({image_size // math.isqrt(r.probs.shape[1]) for r in attention}))
            mean_attention = np.mean([r.probs for r in layers], axis=0) if layers else None
            ids = inputs["input_ids"].cpu().tolist()
            for row, index in enumerate(batch["index"].tolist()):
                view = _sample(analysis, stages, mean_attention, model.backbone.tokenizer, ids[row], row, masks[row])
                if index in keep:
                    view.index, view.expression = index, batch["expression"][row]
                    view.image = _image(batch["pixel_values"][row])
                    view.mask, view.prediction = masks[row], predictions[row]
                    inter = int((predictions[row] & masks[row]).sum())
                    view.iou = sample_iou(inter, int((predictions[row] | masks[row]).sum()))
                    analysis.views.append(view)
    model.train(was_training)
    return analysis


def _image(pixels) -> np.ndarray:
    """[-1, 1] CHW back to uint8 HWC, for display."""
    return ((pixels.float().numpy().transpose(1, 2, 0) + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)


def _sample(analysis: Analysis, stages, mean_attention, tokenizer, input_ids, row: int, mask: np.ndarray) -> SampleView:
    view = SampleView(0, "", np.zeros(0), mask, mask, 0.0)
    analysis.add(("mask", "", "area_fraction"), float(mask.mean()))
    for number, stage in enumerate(stages, start=1):
        analysis.num_tokens = stage.assignment.shape[1]
        token_map = stage.assignment[row].argmax(axis=0).reshape(stage.size)
        best, measures = target_token(token_map, mask_coverage(mask, stage.size), analysis.num_tokens)
        for key, value in measures.items():
            analysis.add(("assignment", f"stage{number}", key), value)
        _, control = target_token(token_map, mask_coverage(mask[::-1, ::-1], stage.size), analysis.num_tokens)
        analysis.add(("assignment", f"stage{number}", f"inside_ratio{CONTROL}"), control["inside_ratio"])
        view.stages.append((token_map, best, measures))
    if mean_attention is not None:
        side = math.isqrt(mean_attention.shape[1])
        maps = mean_attention[row].reshape(side, side, -1)
        coverage = mask_coverage(mask, (side, side))
        rotated = mask_coverage(mask[::-1, ::-1], (side, side))
        groups = token_groups(tokenizer, input_ids)
        for suffix, cover in (("", coverage), (CONTROL, rotated)):
            for group in TOKEN_GROUPS:
                positions = list(groups.positions(group))
                ratio = in_mask_ratio(maps[..., positions].sum(axis=-1), cover) if positions else math.nan
                analysis.add(("cross_attention", f"stride{analysis.stride}", f"in_mask_ratio{suffix}:{group}"), ratio)
        for i, word in enumerate(groups.words):
            word_map = maps[..., list(word.positions)].sum(axis=-1)
            view.words.append((word.text, word_map, in_mask_ratio(word_map, coverage), i == groups.head))
    return view


# --- summary, CSV, figure ----------------------------------------------------------------------


def summary_rows(analysis: Analysis, experiment: str) -> list[list[str]]:
    """CSV rows (``CSV_HEADER``): mean and 95 % bootstrap interval of each measure over the samples
    where it is defined, in a fixed order; a row with a note where a part does not apply."""
    from diffris.report.intervals import percentile_interval, resample_indices

    rows = []
    for (part, where, measure), values in analysis.values.items():
        finite = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
        skipped = len(values) - len(finite)
        note = f"{skipped} sample(s) with an empty mask left out" if skipped else ""
        if len(finite) == 0:
            rows.append([part, where, measure, "0", "", "", "", note or "no sample"])
            continue
        low, high = percentile_interval(finite[resample_indices(len(finite))].mean(axis=1))
        numbers = (f"{x:.{DECIMALS}f}" for x in (finite.mean(), low, high))
        rows.append([part, where, measure, str(len(finite)), *numbers, note])
    missing = {
        "assignment": f"experiment {experiment} has no PCMRD query tokens: no assignment",
        "cross_attention": "no UNet pass with cross-attention in this model",
    }
    rows += [[part, "", "", "0", "", "", "", note] for part, note in missing.items() if not any(r[0] == part for r in rows)]
    return rows


def csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(rows)
    return buffer.getvalue()


def token_colours(num_tokens: int):
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    base = colormaps["tab10" if num_tokens <= 10 else "tab20"]
    return ListedColormap([base(i % base.N) for i in range(max(num_tokens, 1))])


def plot_attention(analysis: Analysis, title: str, notes: list[str]):
    """One row per sample: expression, image, ground truth, prediction, the token map of each
    PCMRD stage (colour = query token, the same colours in every stage, white line = ground truth)
    and the cross-attention map of each word (each scaled from its own minimum to its maximum)."""
    from matplotlib.figure import Figure

    stages = max((len(v.stages) for v in analysis.views), default=0)
    words = min(MAX_WORDS, max((len(v.words) for v in analysis.views), default=0))
    columns = 4 + stages + words
    rows = max(len(analysis.views), 1)
    fig = Figure(figsize=(1.45 * columns + 0.8, 1.75 * rows + 1.0), layout="constrained")
    axes = np.asarray(fig.subplots(rows, columns, squeeze=False))
    colours = token_colours(analysis.num_tokens)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for row, view in zip(axes, analysis.views):
        _draw_row(row, view, stages, words, colours)
    headers = ["expression", "image", "ground truth", "prediction"]
    headers += [f"PCMRD stage {i + 1}\ntoken map" for i in range(stages)]
    headers += [f"word {i + 1}\nUNet cross-attention" for i in range(words)]
    for ax, header in zip(axes[0], headers):
        ax.set_title(header, fontsize=8)
    fig.suptitle("\n".join([title, *notes]), fontsize=9)
    return fig


def _draw_row(row, view: SampleView, stages: int, words: int, colours) -> None:
    side = view.mask.shape[0]
    extent = (-0.5, side - 0.5, side - 0.5, -0.5)
    row[0].axis("off")
    row[0].text(0.0, 0.5, f"#{view.index}\n" + textwrap.fill(view.expression, 20), va="center", ha="left", fontsize=8)
    row[1].imshow(view.image, interpolation="nearest")
    row[2].imshow(view.mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    row[3].imshow(view.prediction, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    row[3].set_xlabel(f"IoU {100 * view.iou:.1f}%", fontsize=7)
    for ax, (token_map, best, measures) in zip(row[4 : 4 + stages], view.stages):
        ax.imshow(token_map, cmap=colours, vmin=-0.5, vmax=colours.N - 0.5, interpolation="nearest", extent=extent)
        _outline(ax, view.mask)
        share = measures["inside_share"]
        label = f"target t{best}" + ("" if math.isnan(share) else f": {100 * share:.0f}% in GT")
        ax.set_xlabel(label, fontsize=7)
    for ax, (word, word_map, ratio, is_head) in zip(row[4 + stages : 4 + stages + words], view.words):
        low, high = float(word_map.min()), float(word_map.max())
        high = max(high, low + 1e-12)
        ax.imshow(word_map, cmap="magma", vmin=low, vmax=high, interpolation="nearest", extent=extent)
        _outline(ax, view.mask)
        label = ("head: " if is_head else "") + f'"{word}"'
        label += "" if math.isnan(ratio) else f"\nin-mask ratio {ratio:.2f}"
        ax.set_xlabel(label, fontsize=7, fontweight="bold" if is_head else "normal")
    for ax in row[4 + stages + len(view.words) :]:
        ax.axis("off")


def _outline(ax, mask: np.ndarray) -> None:
    if mask.any() and not mask.all():
        ax.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=0.8)


# --- the command -------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "attention-maps",
        help="study: PCMRD token assignment and UNet cross-attention maps, with in-mask statistics",
        description="Runs a trained run over a prepared split on the live backbone with recorders "
        "on the PCMRD stages and the UNet's cross-attention; writes a CSV of per-split means with "
        "95 %% bootstrap intervals and a figure of the samples the qualitative figures show.",
    )
    parser.add_argument("--run", required=True, type=Path, help="run folder written by `diffris train`")
    parser.add_argument("--split", required=True, choices=("val", "test"))
    parser.add_argument("--data", type=Path, help="prepared dataset folder (default: the run's)")
    parser.add_argument("--backbone-dir", type=Path, help="backbone folder (default: the run's)")
    parser.add_argument("--samples", type=int, default=4, help="figure rows: the first of evaluate's kept samples")
    parser.add_argument("--figure", required=True, type=Path, help="PNG to write")
    parser.add_argument("--out", required=True, type=Path, help="CSV of the statistics to write")
    parser.add_argument("--batch-size", type=int, help="default: the run's train.eval_batch_size")
    parser.add_argument(
        "--attention-stride", type=int,
        help="image pixels per cross-attention cell; the UNet layers at it are averaged (default: the finest)",
    )  # fmt: skip
    parser.set_defaults(handler=run_attention_maps)


def check_outputs(figure: Path, out: Path, inputs: list[Path | None]) -> None:
    from diffris.fileio import check_inputs

    if figure.suffix.lower() != ".png":
        raise AttentionStudyError(f"--figure {figure}: expected a .png path")
    if Path(figure).resolve() == Path(out).resolve():
        raise AttentionStudyError(f"--figure and --out are the same file {out}")
    check_inputs(figure, inputs, "--figure")
    check_inputs(out, inputs, "--out")
    if out.exists() and (not out.is_file() or out.read_text(errors="replace").split("\n", 1)[0] != ",".join(CSV_HEADER)):
        raise AttentionStudyError(
            f"--out {out}: exists and is not a CSV of `diffris attention-maps`; refusing to overwrite it"
        )
    if figure.exists() and (not figure.is_file() or figure.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n"):
        raise AttentionStudyError(f"--figure {figure}: exists and is not a PNG; refusing to overwrite it")


def run_attention_maps(args: argparse.Namespace) -> int:
    if args.samples < 1:
        raise AttentionStudyError(f"--samples {args.samples}: expected at least 1")
    if args.batch_size is not None and args.batch_size < 1:
        raise AttentionStudyError(f"--batch-size {args.batch_size}: expected at least 1")
    if args.attention_stride is not None and args.attention_stride < 1:
        raise AttentionStudyError(f"--attention-stride {args.attention_stride}: expected at least 1")
    check_outputs(args.figure, args.out, [args.run, args.data, args.backbone_dir])
    analysis, config = study_run(args.run, args.split, args.data, args.backbone_dir, args.samples,
                                 args.batch_size, args.attention_stride)  # fmt: skip
    write_outputs(analysis, config, args.split, args.figure, args.out)
    print(f"written: {args.out}, {args.figure}")
    return 0


def study_run(run: Path, split: str, data: Path | None, backbone_dir: Path | None, samples: int,
              batch_size: int | None, stride: int | None) -> tuple[Analysis, dict]:  # fmt: skip
    """Load the run as ``evaluate_run`` does (live backbone) and analyse the split."""
    from diffris.evaluation.evaluate import NUM_FIGURES, figure_indices, load_for_evaluation
    from diffris.features.datasets import open_split

    # the live UNet as built: the recorders hook into its attention modules
    setup = load_for_evaluation(run, split, data, backbone_dir, batch_size, fast_paths=False)
    dataset = open_split(setup.data, split, setup.model, None)
    keep = tuple(figure_indices(len(dataset), max(samples, NUM_FIGURES))[:samples])  # evaluate's kept PNGs
    settings = setup.settings
    analysis = analyse_split(
        setup.model, dataset, settings["batch_size"], settings["device"], keep, stride, autocast=settings["autocast"],
    )  # fmt: skip
    config = setup.config
    return analysis, config


def write_outputs(analysis: Analysis, config: dict, split: str, figure: Path, out: Path) -> None:
    from diffris.fileio import atomic_write
    from diffris.report.figures import DPI

    rows = summary_rows(analysis, config["experiment"])
    text = csv_text(rows)
    atomic_write(Path(out), lambda tmp: tmp.write_text(text, encoding="utf-8"))
    notes = [r[7] for r in rows if r[2] == "" and r[7]]
    if analysis.stride is not None:
        notes.append(f"cross-attention: mean over heads and the {len(analysis.layers)} UNet layer(s) at stride "
                     f"{analysis.stride} (strides present: {', '.join(map(str, analysis.strides))})")  # fmt: skip
    notes.append("token maps: colour = query token (same colours in every stage); word maps: each scaled from its "
                 "own minimum to its maximum; white line: ground truth")  # fmt: skip
    title = f"Where the model looks: {config['experiment']} / {config['dataset']} {split}, seed {config['seed']}"
    fig = plot_attention(analysis, title, notes)
    atomic_write(Path(figure), lambda tmp: fig.savefig(tmp, dpi=DPI, format="png", metadata={"Software": None}))
