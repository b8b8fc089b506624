"""Each kind of bad input gets a clear error that names the file (and line); nothing is dropped."""

from __future__ import annotations

import pickle

import pytest

from diffris.data import read_raw
from diffris.errors import DataError

from conftest import run_cli


def _first_line(path):
    return next(line for line in path.read_text().splitlines() if line)


def test_missing_phrase_file(raw_copy):
    root = raw_copy("refsegrs")
    (root / "output_phrase_val.txt").unlink()
    with pytest.raises(DataError, match=r"output_phrase_val\.txt: val phrase file is missing"):
        read_raw("refsegrs", root)


def test_id_in_phrase_file_without_image_names_file_and_line(raw_copy):
    root = raw_copy("refsegrs")
    phrase_file = root / "output_phrase_test.txt"
    phrase_file.write_text(phrase_file.read_text().rstrip("\n") + "\n12345 road\n")
    n_lines = len(phrase_file.read_text().splitlines())
    with pytest.raises(DataError, match=rf"12345\.tif: image named at .*output_phrase_test\.txt:{n_lines} is missing"):
        read_raw("refsegrs", root)


def test_empty_expression_names_file_and_line(raw_copy):
    root = raw_copy("risbench")
    phrase_file = root / "RISBench_dataset" / "output_phrase_train.txt"
    lines = phrase_file.read_text().splitlines()
    lines[2] = lines[2].split(" ", 1)[0] + "   "
    phrase_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"output_phrase_train\.txt:3: empty expression"):
        read_raw("risbench", root)


def test_duplicate_id_across_splits_names_both_places(raw_copy):
    root = raw_copy("refsegrs")
    line = _first_line(root / "output_phrase_train.txt")
    test_file = root / "output_phrase_test.txt"
    test_file.write_text(test_file.read_text() + line + "\n")
    with pytest.raises(DataError, match=r"duplicate id .*output_phrase_train\.txt:1 and .*output_phrase_test\.txt"):
        read_raw("refsegrs", root)


def test_rrsisd_duplicate_ref_and_missing_annotation(raw_copy):
    root = raw_copy("rrsisd")
    refs_path = root / "rrsisd" / "refs(unc).p"
    refs = pickle.loads(refs_path.read_bytes())
    refs_path.write_bytes(pickle.dumps(refs + [refs[0]]))
    with pytest.raises(DataError, match=rf"duplicate id '{refs[0]['ref_id']}'"):
        read_raw("rrsisd", root)
    bad = dict(refs[1], ann_id=-5)
    refs_path.write_bytes(pickle.dumps([refs[0], bad]))
    with pytest.raises(DataError, match=r"ann_id -5 has no annotation in .*instances\.json"):
        read_raw("rrsisd", root)


def test_rrsisd_empty_sentence_and_unknown_split(raw_copy):
    root = raw_copy("rrsisd")
    refs_path = root / "rrsisd" / "refs(unc).p"
    refs = pickle.loads(refs_path.read_bytes())
    empty = dict(refs[0], sentences=[{"raw": "  ", "sent": "", "tokens": [], "sent_id": 1}])
    refs_path.write_bytes(pickle.dumps([empty]))
    with pytest.raises(DataError, match=r"refs\(unc\)\.p \(ref #0.*sentence 0 is empty"):
        read_raw("rrsisd", root)
    refs_path.write_bytes(pickle.dumps([dict(refs[0], split="testA")]))
    with pytest.raises(DataError, match="split 'testA' is not one of train, val, test"):
        read_raw("rrsisd", root)


def test_rrsisd_corrupt_files(raw_copy):
    root = raw_copy("rrsisd")
    (root / "rrsisd" / "instances.json").write_text("{not json")
    with pytest.raises(DataError, match=r"instances\.json: not valid JSON"):
        read_raw("rrsisd", root)
    (root / "rrsisd" / "refs(unc).p").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"refs\(unc\)\.p: cannot unpickle"):
        read_raw("rrsisd", root)


def test_missing_image_of_a_ref(raw_copy):
    root = raw_copy("rrsisd")
    refs = pickle.loads((root / "rrsisd" / "refs(unc).p").read_bytes())
    (root / "images" / "rrsisd" / "JPEGImages" / refs[3]["file_name"]).unlink()
    with pytest.raises(DataError, match=rf"{refs[3]['file_name']}: image of .*ref #3.* is missing"):
        read_raw("rrsisd", root)


def test_unreadable_image_is_named_when_loaded(raw_copy):
    root = raw_copy("risbench")
    name = _first_line(root / "RISBench_dataset" / "output_phrase_val.txt").split(" ", 1)[0]
    (root / "RISBench_dataset" / "img_rgb" / name).write_bytes(b"\x89PNG truncated")
    sample = next(s for s in read_raw("risbench", root) if s.image_path.name == name)
    with pytest.raises(DataError, match=rf"{name}: cannot read image"):
        sample.load_image()


def test_mask_with_differing_channels_is_rejected(raw_copy):
    import numpy as np
    from PIL import Image

    root = raw_copy("risbench")
    name = _first_line(root / "RISBench_dataset" / "output_phrase_val.txt").split(" ", 1)[0]
    rgb = np.zeros((96, 96, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(root / "RISBench_dataset" / "mask" / name)
    sample = next(s for s in read_raw("risbench", root) if s.image_path.name == name)
    with pytest.raises(DataError, match=rf"{name}: mask has 3 differing channels"):
        sample.load_mask()


def test_prepare_cli_reports_bad_input_in_one_line(raw_copy, tmp_path):
    root = raw_copy("refsegrs")
    sample_id = _first_line(root / "output_phrase_val.txt").split(" ", 1)[0]
    (root / "masks" / f"{sample_id}.tif").unlink()
    proc = run_cli("prepare", "--dataset", "refsegrs", "--raw", root, "--out", tmp_path / "p", "--image-size", 32, check=False)
    assert proc.returncode == 2
    assert f"masks/{sample_id}.tif: mask named at" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "p").exists()
