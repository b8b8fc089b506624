"""`diffris predict`: a trained run's mask for one's own image and referring expression.

The image is read by the dataset readers' loader (any size; JPEG, PNG, TIFF; grey or RGB; 16-bit
grey scaled to 8 bits; floating-point pixels refused), resized bilinearly to the run's network
side as ``prepare`` does, scaled to [-1, 1] as the prepared dataset does, and run through the
model that ``evaluate`` loads, on the live frozen backbone (no feature cache).

The prediction is brought to the image's own size by upsampling the two logits bilinearly (as
the model itself upsamples its decoder output) and taking the argmax there, ties to background.
At the network side this is the argmax that ``evaluate`` scores; larger images get smooth
boundaries rather than the blocks of a nearest-upsampled mask.

``--out`` is written as a whole (``diffris.fileio.atomic_folder``)::

    <name>-mask.png      8-bit grey, 255 where the expression's object is predicted, else 0
    <name>-overlay.png   the image (8-bit RGB) with the mask filled in red at half opacity
                         and its inner outline in solid red; pixels outside the mask unchanged
    predictions.csv      one row per prediction: what was read and what was written

``<name>`` is the image's file stem for ``--image``, and ``<row>-<stem>`` (the pairs CSV's data
row, from 00000) for ``--pairs``, so two rows with the same image do not collide.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffris.errors import DiffrisError

COLOUR = (255, 0, 0)
ALPHA = 0.5
INDEX_FILE = "predictions.csv"
INDEX_HEADER = ["row", "image", "expression", "width", "height", "foreground_pixels", "mask", "overlay"]
PAIRS_COLUMNS = ("image", "expression")


class PredictError(DiffrisError):
    """A prediction input is missing or unusable: the run, an image, an expression, the pairs CSV."""


@dataclass(frozen=True)
class Query:
    """One image and expression to segment, the name of its outputs and where it was given."""

    image: Path
    given: str  # the image path as written by the user
    expression: str
    name: str
    where: str  # for messages: "--image" or "pairs.csv:3"


# --- inputs ----------------------------------------------------------------------------------


def single_query(image: Path, expression: str | None) -> Query:
    if expression is None:
        raise PredictError("--image needs --expression (or give --pairs CSV instead)")
    expression = checked_expression(expression, "--expression")
    return checked_image_path(Query(Path(image), str(image), expression, Path(image).stem, "--image"))


def read_pairs(path: Path) -> list[Query]:
    """The rows of a pairs CSV (columns ``image``, ``expression``; image paths relative to the
    CSV's folder or absolute), each checked: a non-empty expression, an existing image file."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in PAIRS_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                found = ", ".join(reader.fieldnames or []) or "nothing"
                expected = "a header line `image,expression`"
                raise PredictError(f"{path}: no column {', '.join(missing)}; expected {expected} (found {found})")
            queries = [_pair(path, row, index, f"{path}:{reader.line_num}") for index, row in enumerate(reader)]
    except FileNotFoundError:
        raise PredictError(f"--pairs {path}: no such file") from None
    except UnicodeDecodeError as err:
        raise PredictError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise PredictError(f"{path}: not a readable CSV ({err})") from None
    if not queries:
        raise PredictError(f"{path}: no rows under the header; expected one `image,expression` row per prediction")
    return queries


def _pair(csv_path: Path, row: dict, index: int, where: str) -> Query:
    given = (row.get("image") or "").strip()
    if not given:
        raise PredictError(f"{where}: empty image path")
    image = Path(given) if Path(given).is_absolute() else csv_path.parent / given
    expression = checked_expression(row.get("expression") or "", where)
    return checked_image_path(Query(image, given, expression, f"{index:05d}-{image.stem}", where))


def checked_expression(expression: str, where: str) -> str:
    """The expression without surrounding whitespace, as the dataset readers keep it."""
    if not expression.strip():
        raise PredictError(f"{where}: empty expression; expected a referring expression, e.g. 'the red car on the left'")
    return expression.strip()


def checked_image_path(query: Query) -> Query:
    if not query.image.is_file():
        state = "is not a file" if query.image.exists() else "no such file"
        raise PredictError(f"{query.where}: image {query.image}: {state}")
    return query


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 [H, W, 3] by the dataset readers' rules (``diffris.data.readers.load_rgb``)."""
    from PIL import Image

    from diffris.data.readers import load_rgb

    try:
        return load_rgb(path)
    except Image.DecompressionBombError as err:
        raise PredictError(f"{path}: cannot read image ({err})") from None


# --- the run: the run-folder helpers that train and evaluate use, imported lazily (torch) -----


def checked_run(run: Path, backbone_dir: Path | None) -> Path:
    """Refuse a run folder that is not a completed training (``trained.json``, written last,
    and the selected weights); returns ``backbone_dir`` or else the backbone folder the run was
    trained with (its ``config.json``), which must be there."""
    from diffris.training.run_folder import CONFIG_FILE, DONE_FILE, MODEL_FILE, load_run_config

    if not Path(run).is_dir():
        raise PredictError(f"--run {run}: no such folder; expected a run folder of `diffris train`")
    for name in (DONE_FILE, MODEL_FILE):
        if not (Path(run) / name).is_file():
            raise PredictError(f"{Path(run) / name}: missing; {run} is not a completed training")
    if backbone_dir is not None:
        return Path(backbone_dir)
    config = load_run_config(run)
    recorded = config.get("backbone_dir") or ""
    if not recorded or not Path(recorded).is_dir():
        name = (config.get("backbone") or {}).get("name", "<name>")
        raise PredictError(
            f"{Path(run) / CONFIG_FILE}: the run's backbone folder {recorded!r} is not there (seen from "
            f"{Path.cwd()}); pass --backbone-dir models/backbones/{name}"
        )
    return Path(recorded)


class Predictor:
    """A finished run's model, loaded and set up as ``evaluate`` does, on the live backbone."""

    def __init__(self, run: Path, backbone_dir: Path):
        import torch

        from diffris.determinism import set_cpu_threads
        from diffris.training.run_folder import load_trained_model, mixed_precision

        self.model, config, _ = load_trained_model(run, backbone_dir)
        train = config["train"]
        set_cpu_threads(train.get("cpu_threads", 0))
        self.image_size = int(config["image_size"])
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        # evaluate's settings, less torch.compile: a few images would wait longer for it than it saves
        self.model.backbone.use_fast_paths(train.get("channels_last", False), False, False)
        self.autocast = mixed_precision(train["mixed_precision"]) == "bf16"
        self.memory_format = torch.channels_last if train.get("channels_last") else None

    def logits(self, image: np.ndarray, expression: str):
        """The two logits [2, S, S] (float32) at the network side S for an RGB uint8 image."""
        import torch

        from diffris.data.dataset import pixel_values
        from diffris.data.prepare import resize_image
        from diffris.features.datasets import model_inputs

        item = {"pixel_values": pixel_values(resize_image(image, self.image_size)), "expression": expression}
        batch = torch.utils.data.default_collate([item])  # a batch of one, as evaluate's loader makes it
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits = self.model(**model_inputs(self.model, batch, self.device, self.memory_format))
        return logits[0].float()

    def mask(self, image: np.ndarray, expression: str) -> np.ndarray:
        """Boolean mask at the image's own size (see the module docstring)."""
        return mask_at_size(self.logits(image, expression), image.shape[:2])

    def is_truncated(self, expression: str) -> bool:
        """Whether the expression has more tokens than the model reads (it is cut, as in training)."""
        tokens = self.model.backbone.tokenizer(expression)["input_ids"]
        return len(tokens) > self.model.config.text_max_length


def mask_at_size(logits, size: tuple[int, int]) -> np.ndarray:
    """Two logits [2, S, S] -> boolean mask [H, W]: bilinear upsampling of the logits, then the
    argmax (foreground iff its logit is the larger, ties to background, as in ``evaluate``)."""
    from diffris.models.layers import resize

    logits = resize(logits[None], tuple(size))[0]
    return (logits.argmax(dim=0) == 1).cpu().numpy()


# --- outputs ---------------------------------------------------------------------------------


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with ``mask`` filled in ``COLOUR`` at ``ALPHA`` and its inner outline in solid
    ``COLOUR``; pixels outside the mask are the image's own."""
    out = image.copy()
    blended = image[mask] * (1 - ALPHA) + np.asarray(COLOUR, dtype=np.float64) * ALPHA
    out[mask] = np.round(blended).astype(np.uint8)
    out[outline(mask)] = COLOUR
    return out


def outline(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels within ``width`` of its edge, inside it; ``width`` grows with the image
    (1 px up to 511 px, 3 px at 800 px). The image's own border is not an edge of the mask."""
    width = max(1, min(mask.shape) // 256)
    return mask & ~erode(mask, width)


def erode(mask: np.ndarray, width: int) -> np.ndarray:
    """Binary erosion by a (2·width+1)² square with the border replicated: rows, then columns."""
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (width, width)
        padded = np.pad(mask, pad, mode="edge")
        eroded = np.ones_like(mask)
        for k in range(2 * width + 1):
            eroded &= padded[k : k + mask.shape[0]] if axis == 0 else padded[:, k : k + mask.shape[1]]
        mask = eroded
    return mask


def write_prediction(folder: Path, query: Query, image: np.ndarray, mask: np.ndarray) -> list:
    """Both PNGs of one prediction; returns its row of the index."""
    from PIL import Image

    names = (f"{query.name}-mask.png", f"{query.name}-overlay.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(folder / names[0])
    Image.fromarray(overlay(image, mask)).save(folder / names[1])
    height, width = mask.shape
    return [query.given, query.expression, width, height, int(mask.sum()), *names]


def predict(
    run: Path, queries: list[Query], out: Path, backbone_dir: Path | None = None, pairs: Path | None = None
) -> Path:
    """Predict every query with ``run``'s model and write ``out`` as a whole; returns ``out``.

    Everything is checked before the model is loaded: the run, each image (decoded once) and
    ``out``, which may not be or overlap an input and must be new, empty or an earlier output
    of ``diffris predict``."""
    from tqdm.auto import tqdm

    from diffris.fileio import atomic_folder, check_out

    backbone_dir = checked_run(run, backbone_dir)
    inputs = [run, backbone_dir, pairs, *(q.image for q in queries)]
    check_out(out, "predict", inputs)
    for query in queries:
        read_image(query.image)
    predictor = Predictor(run, backbone_dir)
    for query in queries:
        if predictor.is_truncated(query.expression):
            limit = predictor.model.config.text_max_length
            note = f"the expression is longer than the model's {limit} tokens and is cut there, as in training"
            print(f"diffris predict: note: {query.where}: {note}", file=sys.stderr)

    def write(folder: Path) -> None:
        rows = []
        for row, query in enumerate(tqdm(queries, desc="predict", unit="image", disable=len(queries) < 2)):
            image = read_image(query.image)
            rows.append([row, *write_prediction(folder, query, image, predictor.mask(image, query.expression))])
        with open(folder / INDEX_FILE, "w", newline="", encoding="utf-8") as f:
            csv.writer(f, lineterminator="\n").writerows([INDEX_HEADER, *rows])

    return atomic_folder(Path(out), write, "predict", inputs)


# --- command line ----------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "predict",
        help="segment one's own images with a trained run: mask and overlay PNGs at each image's size",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--run", required=True, type=Path, help="run folder of a completed `diffris train`")
    parser.add_argument(
        "--backbone-dir", type=Path,
        help="backbone folder (fetch-weights); default: the one the run was trained with (its config.json)",
    )  # fmt: skip
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, help="an image file (JPEG, PNG, TIFF; grey or RGB; 8 or 16 bit)")
    source.add_argument(
        "--pairs", type=Path,
        help="CSV with columns image,expression (paths relative to the CSV's folder, or absolute)",
    )  # fmt: skip
    parser.add_argument("--expression", help="the referring expression for --image")
    parser.add_argument("--out", required=True, type=Path, help="folder to write (replaced as a whole)")
    parser.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    if args.pairs is not None:
        if args.expression is not None:
            raise PredictError("--expression goes with --image; with --pairs each row has its expression")
        queries = read_pairs(args.pairs)
    else:
        queries = [single_query(args.image, args.expression)]
    out = predict(args.run, queries, args.out, args.backbone_dir, pairs=args.pairs)
    count = f"{len(queries)} prediction{'s' if len(queries) > 1 else ''}"
    print(f"written: {out} ({count}; index {INDEX_FILE})")
    return 0
