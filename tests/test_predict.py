"""`diffris predict` on the reference run of test_train (the real tiny model, trained once per
session): outputs at each image's own size, the readers' image formats, --pairs, the same model
path as `diffris evaluate`, and one-line refusals that leave nothing behind."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import diffris.evaluation.evaluate
import diffris.training.run_folder
from diffris import cli
from diffris.data.dataset import PreparedSplit
from diffris.data.readers import load_rgb
from diffris.training.validation import evaluate_model
from diffris.fileio import MARKER
from diffris.evaluation.predict import COLOUR, INDEX_FILE, Predictor, outline, overlay
from conftest import run_cli
from test_train import ENV, shared_assets

WIDTH, HEIGHT = 90, 70
EXPRESSION = "the large building in the middle"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    assets = shared_assets(tmp_path_factory)
    return assets, assets.run("reference")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """A colour PNG, a 16-bit grey TIFF and an 8-bit grey PNG, all 90 wide and 70 high."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = {"rgb": folder / "scene.png", "wide": folder / "scene16.tif", "grey": folder / "grey.png"}
    Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(paths["rgb"])
    Image.fromarray(rng.integers(0, 65536, (HEIGHT, WIDTH), dtype=np.uint16)).save(paths["wide"])
    Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)).save(paths["grey"])
    return paths


def predict(*args) -> None:
    assert cli.main(["predict", *map(str, args)]) == 0


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def as_rgb(path: Path) -> np.ndarray:
    """What the overlay starts from: the readers' 8-bit RGB (16-bit grey scaled by 1/257)."""
    image = Image.open(path)
    if image.mode.startswith("I;16"):
        grey = (np.asarray(image).astype(np.int64) * 255 + 32767) // 65535
        return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def check_outputs(image: Path, mask_png: Path, overlay_png: Path) -> np.ndarray:
    mask_image, overlay_image = Image.open(mask_png), Image.open(overlay_png)
    assert (mask_image.mode, mask_image.size) == ("L", (WIDTH, HEIGHT))
    assert (overlay_image.mode, overlay_image.size) == ("RGB", (WIDTH, HEIGHT))
    mask = np.asarray(mask_image)
    assert set(np.unique(mask)) <= {0, 255}
    rgb, shown = as_rgb(image), np.asarray(overlay_image)
    assert (shown[mask == 0] == rgb[mask == 0]).all()
    assert (shown == overlay(rgb, mask == 255)).all()
    return mask == 255


# --- outputs ---------------------------------------------------------------------------------


def test_one_image_gives_a_binary_mask_and_an_overlay_at_its_own_size(trained, images, tmp_path):
    assets, run = trained
    out = tmp_path / "out"
    one = ["--image", images["rgb"], "--expression", EXPRESSION]
    predict("--run", run, "--backbone-dir", assets.backbone, *one, "--out", out)
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, INDEX_FILE, "scene-mask.png", "scene-overlay.png"])
    mask = check_outputs(images["rgb"], out / "scene-mask.png", out / "scene-overlay.png")
    [row] = read_rows(out / INDEX_FILE)
    assert row == {
        "row": "0", "image": str(images["rgb"]), "expression": EXPRESSION, "width": str(WIDTH), "height": str(HEIGHT),
        "foreground_pixels": str(int(mask.sum())), "mask": "scene-mask.png", "overlay": "scene-overlay.png",
    }  # fmt: skip


def test_pairs_accept_16_bit_tiff_and_grey_png_and_name_repeated_images_apart(trained, images, tmp_path, capsys):
    _, run = trained  # the backbone folder comes from the run's config.json
    pairs = images["rgb"].parent / "pairs.csv"
    long = "the " + "very " * 40 + "long road"
    rows = [
        ("scene16.tif", EXPRESSION),
        ("grey.png", "  the road  "),
        ("scene.png", EXPRESSION),
        (str(images["rgb"]), "the small car at the top"),  # the same image, absolute, another expression
        ("scene.png", long),
    ]
    pairs.write_text("image,expression\n" + "".join(f"{image},{text}\n" for image, text in rows))
    out = tmp_path / "out"
    predict("--run", run, "--pairs", pairs, "--out", out)
    index = read_rows(out / INDEX_FILE)
    names = ["00000-scene16", "00001-grey", "00002-scene", "00003-scene", "00004-scene"]
    assert [r["mask"] for r in index] == [f"{n}-mask.png" for n in names]
    assert [r["expression"] for r in index] == [EXPRESSION, "the road", EXPRESSION, "the small car at the top", long]
    assert [r["image"] for r in index] == [image for image, _ in rows]
    for row, (image, _) in zip(index, rows):
        check_outputs(pairs.parent / image, out / row["mask"], out / row["overlay"])
    assert len(list(out.glob("*.png"))) == 10
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert len(notes) == 1 and "pairs.csv:6" in notes[0] and "32 tokens" in notes[0]


def test_overlay_fills_the_mask_and_draws_its_inner_outline():
    image = np.full((6, 7, 3), 100, dtype=np.uint8)
    mask = np.zeros((6, 7), dtype=bool)
    mask[1:5, 1:6] = True
    shown = overlay(image, mask)
    edge = outline(mask)
    assert edge.sum() == 14 and not edge[2:4, 2:5].any()  # the 4x5 block's ring, inside the mask
    assert (shown[edge] == COLOUR).all()
    assert (shown[mask & ~edge] == [178, 50, 50]).all()  # half image, half colour
    assert (shown[~mask] == 100).all()
    assert not outline(np.ones((6, 7), dtype=bool)).any()  # the image's border is not the mask's edge
    wide = np.zeros((600, 520), dtype=bool)
    wide[100:300, 100:300] = True
    assert outline(wide).sum() == 200 * 200 - 196 * 196  # 2 px wide from 512 px on


# --- the same model path as evaluate ---------------------------------------------------------


@pytest.fixture(scope="module")
def test_split(trained):
    """The test split's raw images, expressions and the logits predict's model gives them."""
    assets, run = trained
    records = [json.loads(line) for line in (assets.data / "test" / "manifest.jsonl").read_text().splitlines()]
    raw = [assets.root / "raw" / "refsegrs" / "images" / f"{r['sample_id']}.tif" for r in records]
    expressions = [r["expression"] for r in records]
    predictor = Predictor(run, assets.backbone)
    logits = torch.stack([predictor.logits(load_rgb(path), text) for path, text in zip(raw, expressions)])
    return raw, expressions, logits, predictor


def evaluate_logits(model: torch.nn.Module, data: Path, batch_size: int) -> torch.Tensor:
    """The logits ``model`` gives the prepared test split inside ``evaluate_model``."""
    seen = []
    hook = model.register_forward_hook(lambda module, args, logits: seen.append(logits.detach().clone()))
    try:
        evaluate_model(model, PreparedSplit(data, "test"), batch_size, torch.device("cpu"))
    finally:
        hook.remove()
    return torch.cat(seen)


def test_a_raw_image_reaches_the_model_as_evaluate_feeds_it_the_prepared_sample(trained, test_split):
    """Reading, bilinear resize and scaling give prepare's pixels, and the model path is
    evaluate's: the logits are the same bits at evaluate's batch of one. At its batch of 8 the
    CPU kernels differ in the last bits."""
    assets, _ = trained
    _, _, logits, predictor = test_split
    assert torch.equal(logits, evaluate_logits(predictor.model, assets.data, batch_size=1))
    assert (logits - evaluate_logits(predictor.model, assets.data, batch_size=8)).abs().max() < 1e-5


@pytest.fixture
def shifted(test_split, monkeypatch) -> float:
    """The tiny run predicts background everywhere, so masks would agree trivially: from here on
    every model that evaluate and predict load gets its foreground logit raised by the median
    margin, which makes about half of each test mask foreground. Returns the shift."""
    _, _, logits, _ = test_split
    shift = float((logits[:, 0] - logits[:, 1]).median())
    original = diffris.training.run_folder.load_trained_model

    def load(run, backbone_dir=None):
        model, config, info = original(run, backbone_dir)
        offset = torch.tensor([0.0, shift])[:, None, None]
        model.register_forward_hook(lambda module, args, logits: logits + offset.to(logits.device))
        return model, config, info

    monkeypatch.setattr(diffris.training.run_folder, "load_trained_model", load)  # predict's
    monkeypatch.setattr(diffris.evaluation.evaluate, "load_trained_model", load)  # evaluate's, bound at its import
    return shift


def test_masks_are_evaluates_at_network_size_and_upsampled_logits_at_the_images(trained, test_split, shifted, tmp_path):
    assets, run = trained
    raw, expressions, logits, _ = test_split
    metrics = tmp_path / "metrics" / "test.json"
    evaluate = ["evaluate", "--run", run, "--split", "test", "--out", metrics, "--batch-size", 1, "--num-figures", 8]
    assert cli.main(list(map(str, evaluate))) == 0
    prepared = np.load(assets.data / "test" / "images.npy")
    for k, image in enumerate(prepared):  # network-size images: predict's resize leaves them as they are
        Image.fromarray(image).save(tmp_path / f"prepared{k}.png")
    pairs = tmp_path / "pairs.csv"
    rows = [*((f"prepared{k}.png", t) for k, t in enumerate(expressions)), *zip(map(str, raw), expressions)]
    with open(pairs, "w", newline="") as f:
        csv.writer(f).writerows([("image", "expression"), *rows])
    predict("--run", run, "--pairs", pairs, "--out", tmp_path / "out")

    index = read_rows(tmp_path / "out" / INDEX_FILE)
    masks = [np.asarray(Image.open(tmp_path / "out" / row["mask"])) == 255 for row in index]
    evaluated = [np.asarray(Image.open(metrics.with_name("test-predictions") / f"{k:05d}.png")) > 127 for k in range(8)]
    assert 0.2 < np.mean(evaluated) < 0.8
    for k in range(8):
        assert (masks[k] == evaluated[k]).all(), f"test sample {k} at 64 px"
        shifted_logits = logits[k] + torch.tensor([0.0, shifted])[:, None, None]
        upsampled = F.interpolate(shifted_logits[None], size=(128, 128), mode="bilinear", align_corners=False)[0]
        assert masks[8 + k].shape == load_rgb(raw[k]).shape[:2] == (128, 128)
        assert (masks[8 + k] == (upsampled[1] > upsampled[0]).numpy()).all(), f"test sample {k} at 128 px"


# --- bad input -------------------------------------------------------------------------------


def bad_inputs(trained, images, tmp_path) -> dict[str, tuple[list, list[str], Path]]:
    """name -> (predict arguments but --out, words the error line must hold, --out)."""
    _, run = trained
    out = tmp_path / "out"
    unfinished, moved = tmp_path / "unfinished", tmp_path / "moved"
    shutil.copytree(run, unfinished)
    (unfinished / "trained.json").unlink()
    shutil.copytree(run, moved)  # its config.json names a backbone folder that is not there
    config = json.loads((moved / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps({**config, "backbone_dir": str(tmp_path / "gone")}))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    floats = tmp_path / "float.tif"
    Image.fromarray(np.zeros((HEIGHT, WIDTH), dtype=np.float32)).save(floats)
    columns, missing = tmp_path / "columns.csv", tmp_path / "missing.csv"
    columns.write_text("image,text\nscene.png,the road\n")
    missing.write_text(f"image,expression\n{images['rgb']},the road\nnowhere.png,the road\n")
    def image(path: Path, expression: str | None = EXPRESSION) -> list:
        return ["--image", path, *([] if expression is None else ["--expression", expression])]

    rgb, folder = images["rgb"], images["rgb"].parent
    return {
        "no run": (["--run", tmp_path / "nowhere", *image(rgb)], ["no such folder"], out),
        "unfinished run": (["--run", unfinished, *image(rgb)], ["trained.json: missing", "not a completed"], out),
        "moved backbone": (["--run", moved, *image(rgb)], ["config.json", "gone", "pass --backbone-dir"], out),
        "corrupt image": (["--run", run, *image(corrupt)], ["corrupt.jpg", "cannot read image"], out),
        "float image": (["--run", run, *image(floats)], ["float.tif", "unsupported image mode"], out),
        "missing image": (["--run", run, *image(tmp_path / "nope.png")], ["nope.png", "no such file"], out),
        "no expression": (["--run", run, *image(rgb, None)], ["--image needs --expression"], out),
        "empty expression": (["--run", run, *image(rgb, "")], ["--expression: empty expression"], out),
        "blank expression": (["--run", run, *image(rgb, " \t ")], ["--expression: empty expression"], out),
        "pairs columns": (["--run", run, "--pairs", columns], ["columns.csv", "no column expression"], out),
        "pairs image": (["--run", run, "--pairs", missing], ["missing.csv:3", "nowhere.png", "no such file"], out),
        "out is the run": (["--run", run, *image(rgb)], ["lies inside the input"], run / "predictions"),
        "out holds the image": (["--run", run, *image(rgb)], ["contains the input"], folder),
    }


BAD = [
    "no run", "unfinished run", "moved backbone", "corrupt image", "float image", "missing image", "no expression",
    "empty expression", "blank expression", "pairs columns", "pairs image", "out is the run", "out holds the image",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_leaves_nothing(trained, images, tmp_path, capsys, case):
    args, words, out = bad_inputs(trained, images, tmp_path)[case]
    before = {folder: sorted(folder.rglob("*")) for folder in (tmp_path, trained[1], images["rgb"].parent)}
    code = cli.main(["predict", *map(str, args), "--out", str(out)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("diffris predict: error: "), lines
    assert all(word in lines[0] for word in words), lines[0]
    assert {folder: sorted(folder.rglob("*")) for folder in before} == before  # no output, no partial folder


def test_a_failing_command_prints_no_traceback(trained, tmp_path):
    _, run = trained
    args = ["--run", run, "--image", tmp_path / "nope.png", "--expression", "x", "--out", tmp_path / "out"]
    proc = run_cli("predict", *args, check=False, env=ENV)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
