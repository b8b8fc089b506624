"""The data layer on bad input: every case is one clear error naming the file (and line, key or
annotation), or a counted repair; nothing is read wrong without a word (readers, prepare, fetch)."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
import zipfile
import zlib
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from diffris.config import load_params
from diffris.data import read_raw
from diffris.data.sources import MARKER, DatasetSource, fetch_real
from diffris.errors import DataError, FetchError

from conftest import run_cli
from test_fetch import _zip_dir


def first_sample(root, dataset, split="train"):
    return next(s for s in read_raw(dataset, root) if s.split == split)


# --------------------------------------------------------------------------- bit depths


def test_16_bit_grey_tiff_is_scaled_not_clipped(raw_copy):
    root = raw_copy("refsegrs")
    sample = first_sample(root, "refsegrs")
    grey = np.linspace(0, 65535, 96 * 96).round().astype(np.uint16).reshape(96, 96)
    Image.fromarray(grey).save(sample.image_path)
    assert Image.open(sample.image_path).mode == "I;16"
    image = sample.load_image()
    expected = (grey.astype(np.int64) * 255 + 32767) // 65535
    assert image.dtype == np.uint8 and (image[..., 0] == expected).all() and (image[..., 2] == expected).all()
    assert (image == 255).mean() < 0.01  # not the 91 % of a clipping conversion


def write_png16_rgb(path, rgb: np.ndarray) -> None:
    """A 48-bit RGB PNG (Pillow cannot write one)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    h, w, _ = rgb.shape
    rows = b"".join(b"\x00" + rgb[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_16_bit_rgb_png_is_scaled(raw_copy):
    root = raw_copy("risbench")
    sample = first_sample(root, "risbench")
    rgb = np.zeros((8, 8, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 65535, 32768, 257
    write_png16_rgb(sample.image_path, rgb)
    image = sample.load_image()
    assert image.shape == (8, 8, 3) and tuple(image[0, 0]) == (255, 128, 1)


def test_float_and_one_bit_images(raw_copy):
    root = raw_copy("refsegrs")
    sample = first_sample(root, "refsegrs")
    Image.fromarray(np.ones((96, 96), np.float32)).save(sample.image_path)
    with pytest.raises(DataError, match=rf"{sample.image_path.name}: unsupported image mode 'F'"):
        sample.load_image()
    bits = np.zeros((96, 96), bool)
    bits[:, 48:] = True
    Image.fromarray(bits).save(sample.image_path)
    assert (sample.load_image()[:, 48:] == 255).all() and (sample.load_image()[:, :48] == 0).all()
    mask_path = root / "masks" / f"{sample.sample_id}.tif"
    Image.fromarray(bits).save(mask_path)  # a 1-bit mask: its set pixels
    assert (sample.load_mask() == bits).all()


# --------------------------------------------------------------------------- RRSIS-D metadata


def rrsisd_files(root):
    refs_path, inst_path = root / "rrsisd" / "refs(unc).p", root / "rrsisd" / "instances.json"
    return refs_path, pickle.loads(refs_path.read_bytes()), inst_path, json.loads(inst_path.read_text())


@pytest.mark.parametrize("counts", ["", "0", [10, 5]])
def test_empty_or_short_rle_is_refused_naming_file_and_annotation(raw_copy, counts):
    root = raw_copy("rrsisd")
    _, _, inst_path, inst = rrsisd_files(root)
    ann = inst["annotations"][2]
    ann["segmentation"] = [{"size": [96, 96], "counts": counts}]
    inst_path.write_text(json.dumps(inst))
    sample = next(s for s in read_raw("rrsisd", root) if s.sample_id == str(ann["id"]))
    with pytest.raises(DataError, match=rf"instances\.json \(annotation {ann['id']}\), segment 0: RLE"):
        sample.load_mask()


def test_rle_of_another_size_than_its_runs_is_refused(raw_copy):
    root = raw_copy("rrsisd")
    _, _, inst_path, inst = rrsisd_files(root)
    inst["annotations"][0]["segmentation"][0]["size"] = [96, 97]
    inst_path.write_text(json.dumps(inst))
    sample = next(s for s in read_raw("rrsisd", root) if s.sample_id == str(inst["annotations"][0]["id"]))
    with pytest.raises(DataError, match="RLE runs cover 9216 pixels, its size 96x97 has 9312"):
        sample.load_mask()


def test_refs_that_are_not_dicts_and_annotations_without_ids(raw_copy):
    root = raw_copy("rrsisd")
    refs_path, refs, inst_path, inst = rrsisd_files(root)
    refs_path.write_bytes(pickle.dumps(refs + [["not", "a", "dict"]]))
    with pytest.raises(DataError, match=rf"ref #{len(refs)}\): expected a dict, found list"):
        read_raw("rrsisd", root)
    refs_path.write_bytes(pickle.dumps(refs))
    for key in ("id", "image_id"):
        broken = json.loads(json.dumps(inst))
        del broken["annotations"][3][key]
        inst_path.write_text(json.dumps(broken))
        with pytest.raises(DataError, match=rf"instances\.json: annotations\[3\] has no '{key}'"):
            read_raw("rrsisd", root)
    inst["annotations"][1] = "x"
    inst_path.write_text(json.dumps(inst))
    with pytest.raises(DataError, match=r"annotations\[1\] has no 'id'"):
        read_raw("rrsisd", root)


def test_file_names_in_metadata_never_leave_the_dataset(raw_copy):
    root = raw_copy("rrsisd")
    refs_path, refs, _, _ = rrsisd_files(root)
    refs[0]["file_name"] = "../../../../../../etc/hostname"
    refs_path.write_bytes(pickle.dumps(refs))
    with pytest.raises(DataError, match=r"file name '\.\./\.\./.*hostname' leads outside .*JPEGImages"):
        read_raw("rrsisd", root)
    root = raw_copy("risbench")
    phrase_file = root / "RISBench_dataset" / "output_phrase_val.txt"
    phrase_file.write_text("../../../../etc/x.png The grey ship.\n" + phrase_file.read_text())
    with pytest.raises(DataError, match=r"output_phrase_val\.txt:1: file name '\.\./.*x\.png' leads outside"):
        read_raw("risbench", root)


def test_non_utf8_phrase_file_names_the_line(raw_copy):
    root = raw_copy("refsegrs")
    phrase_file = root / "output_phrase_test.txt"
    lines = phrase_file.read_bytes().split(b"\n")
    lines[2] = lines[2] + b" caf\xe9"
    phrase_file.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=r"output_phrase_test\.txt:3: not UTF-8 text \(byte 0xe9\)"):
        read_raw("refsegrs", root)
    proc = run_cli("prepare", "--dataset", "refsegrs", "--raw", root, "--out", root.parent / "p", "--image-size", 32, check=False)
    assert proc.returncode == 2 and "output_phrase_test.txt:3: not UTF-8" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("size", ["0", "-8", "63"])
def test_prepare_image_size_is_checked_first(raw_copy, tmp_path, size):
    root = raw_copy("risbench")
    proc = run_cli("prepare", "--dataset", "risbench", "--raw", root, "--out", tmp_path / "p", "--image-size", size, check=False)
    assert proc.returncode == 2 and f"--image-size: {size} is not a positive multiple of 32" in proc.stderr
    assert not (tmp_path / "p").exists() and not (tmp_path / "p.partial").exists()


# --------------------------------------------------------------------------- fetch


def pinned_refsegrs(archive):
    source = DatasetSource.from_params(load_params(), "refsegrs")
    return replace(source, obtain=dict(source.obtain, sha256=hashlib.sha256(archive.read_bytes()).hexdigest()))


@pytest.fixture
def refsegrs_archive(tmp_path, raw_copy):
    out = tmp_path / "download"
    out.mkdir()
    archive = out / "RefSegRS.zip"
    _zip_dir(raw_copy("refsegrs"), archive, top="RefSegRS/")
    return out, pinned_refsegrs(archive)


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return data


def test_fetch_records_every_file_and_reextracts_a_torn_one(refsegrs_archive):
    out, source = refsegrs_archive
    fetch_real(source, out)
    files = json.loads((out / MARKER).read_text())["files"]
    assert len(files) == 3 + 2 * 16 and "RefSegRS.zip" not in files
    torn = out / "images" / sorted(files)[0].split("/")[-1]
    whole = truncate(torn)
    fetch_real(source, out)  # the listing no longer matches: sha256 checked again, extracted again
    assert torn.read_bytes() == whole
    (out / MARKER).unlink()  # killed mid-extraction: no record, one file torn
    truncate(torn)
    fetch_real(source, out)
    assert torn.read_bytes() == whole and (out / MARKER).exists()


def test_refused_archive_extracts_nothing_and_is_never_marked_verified(refsegrs_archive):
    out, _ = refsegrs_archive
    archive = out / "RefSegRS.zip"
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("../evil.txt", "x")
    source = pinned_refsegrs(archive)
    for _ in range(2):
        with pytest.raises(FetchError, match="would extract outside .*nothing was extracted"):
            fetch_real(source, out)
        assert not (out / MARKER).exists() and not (out / "images").exists()


def test_placed_dataset_is_read_completely_before_it_is_marked(raw_copy):
    root = raw_copy("risbench")
    sample = first_sample(root, "risbench", "test")
    whole = truncate(sample.image_path)
    proc = run_cli("fetch", "--dataset", "risbench", "--source", "real", "--out", root, check=False)
    assert proc.returncode == 2 and f"{sample.image_path.name}: cannot read image" in proc.stderr
    assert not (root / MARKER).exists()
    sample.image_path.write_bytes(whole)
    run_cli("fetch", "--dataset", "risbench", "--source", "real", "--out", root)
    assert (root / MARKER).exists()
    mask = root / "RISBench_dataset" / "mask" / sample.image_path.name
    truncate(mask)
    proc = run_cli("fetch", "--dataset", "risbench", "--source", "real", "--out", root, check=False)
    assert proc.returncode == 2 and f"{mask}: differs from the verified copy" in proc.stderr
    assert not (root / MARKER).exists()
