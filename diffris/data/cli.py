"""`diffris fetch` and `diffris prepare`."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffris.config import DATASETS


def register(sub: argparse._SubParsersAction) -> None:
    fetch = sub.add_parser(
        "fetch",
        help="download (real) or generate (synthetic) a dataset in its raw on-disk layout",
        description="Real: download with checksum, or say where to get the files and verify them. "
        "Synthetic: write a small twin in the same layout.",
    )
    fetch.add_argument("--dataset", required=True, choices=DATASETS)
    fetch.add_argument("--source", choices=("real", "synthetic"), help="default: the scale's data_source")
    fetch.add_argument("--out", required=True, type=Path, help="folder to hold the raw layout")
    fetch.add_argument("--params", type=Path, help="params.yaml (default: the repository's)")
    fetch.add_argument("--scale", help="scale whose synthetic sizes to use (default: params.yaml's `scale`)")
    fetch.set_defaults(handler=run_fetch, needs_network=lambda a: a.source == "real")

    prep = sub.add_parser("prepare", help="raw layout -> resized arrays per split + manifest")
    prep.add_argument("--dataset", required=True, choices=DATASETS)
    prep.add_argument("--raw", required=True, type=Path, help="folder holding the raw layout")
    prep.add_argument("--out", required=True, type=Path)
    prep.add_argument("--image-size", required=True, type=int)
    prep.set_defaults(handler=run_prepare)


def run_fetch(args: argparse.Namespace) -> int:
    from diffris.config import load_params, scale_params
    from diffris.data.sources import DatasetSource, fetch_real, fetch_synthetic

    params = load_params(args.params)
    scale = scale_params(params, args.scale)
    source = DatasetSource.from_params(params, args.dataset)
    kind = args.source or scale["data_source"]
    if kind == "real":
        info = fetch_real(source, args.out)
    else:
        synth = scale["synthetic"]
        info = fetch_synthetic(source, args.out, synth["splits"], synth["raw_image_size"], params["seed"])
    counts = ", ".join(f"{k} {v}" for k, v in info["splits"].items())
    print(f"{source.name} ({kind}) ready in {args.out}: {counts}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from diffris.data.prepare import format_summary, prepare

    summary = prepare(args.dataset, args.raw, args.out, args.image_size)
    print(format_summary(summary))
    return 0
