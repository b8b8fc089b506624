"""Where each dataset comes from and how it is obtained: params.yaml's ``datasets`` registry.

``fetch_real`` downloads what can be downloaded (RefSegRS from the Hugging Face Hub at a pinned
revision, checked against its published sha256) and, for datasets behind a browser (Google Drive,
Baidu), says exactly where to get the files and where to put them, then verifies the placed layout.
``fetch_synthetic`` writes the synthetic twin in the same layout.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from diffris.config import DATASETS, SPLITS
from diffris.data.readers import read_raw
from diffris.errors import ConfigError, DataError, FetchError
from diffris.fileio import sha256sum, write_json

MARKER = "FETCHED.json"  # written last: its presence means the folder holds a verified dataset


@dataclass(frozen=True)
class DatasetSource:
    key: str
    name: str
    paper_splits: dict[str, int]
    license: str
    homepage: str
    obtain: dict

    @classmethod
    def from_params(cls, params: dict, key: str) -> DatasetSource:
        if key not in DATASETS:
            raise ConfigError(f"unknown dataset {key!r}; expected one of {', '.join(DATASETS)}")
        entry = params["datasets"][key]
        return cls(key, entry["name"], entry["paper_splits"], entry["license"], entry["homepage"], entry["obtain"])

    def instructions(self, out: Path) -> str:
        urls = "\n".join(f"    {u}" for u in self.obtain.get("urls", []))
        where = f"  from:\n{urls}\n" if urls else ""
        return (
            f"To get {self.name} ({self.license}) by hand:\n{where}"
            f"  then: {self.obtain['instructions']}\n"
            f"  target folder: {out.resolve()}\n"
            f"  and run this command again to verify the layout."
        )


def verify_layout(source: DatasetSource, root: Path) -> dict[str, int]:
    """Read the layout under ``root`` with the dataset's reader; returns samples per split."""
    samples = read_raw(source.key, root)
    counts = {split: sum(s.split == split for s in samples) for split in SPLITS}
    if not all(counts.values()):
        empty = [s for s, n in counts.items() if not n]
        raise DataError(f"{root}: no {', '.join(empty)} samples found in the {source.name} layout")
    return counts


def fetch_synthetic(source: DatasetSource, out: Path, splits: dict[str, int], image_size: int, seed: int) -> dict:
    """Generate into ``<out>.partial`` and move it into place once verified, so an interrupted run
    never leaves a folder that looks complete. Only a previous synthetic fetch is replaced."""
    from diffris.data.synthetic import generate

    if out.exists() and any(out.iterdir()) and _marker_source(out) != "synthetic":
        raise DataError(f"{out}: folder exists and does not hold a synthetic dataset; refusing to overwrite it")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    generate(source.key, partial, splits, image_size, seed)
    counts = verify_layout(source, partial)
    info = {"dataset": source.key, "source": "synthetic", "seed": seed, "image_size": image_size, "splits": counts}
    write_json(partial / MARKER, info)
    shutil.rmtree(out, ignore_errors=True)
    partial.replace(out)
    return info


def _marker_source(root: Path) -> str | None:
    try:
        return json.loads((root / MARKER).read_text()).get("source")
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def fetch_real(source: DatasetSource, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    if source.obtain["kind"] == "hub":
        _fetch_hub_archive(source, out)
    elif not _layout_present(source, out):
        raise FetchError(source.instructions(out))
    counts = verify_layout(source, out)
    _warn_split_sizes(source, counts)
    info = {"dataset": source.key, "source": "real", "splits": counts}
    info.update({k: source.obtain[k] for k in ("repo_id", "revision", "filename", "sha256") if k in source.obtain})
    write_json(out / MARKER, info)
    return info


def _layout_present(source: DatasetSource, out: Path) -> bool:
    probes = {
        "rrsisd": ["rrsisd/refs(unc).p"],
        "refsegrs": ["output_phrase_train.txt"],
        "risbench": ["RISBench_dataset/output_phrase_train.txt", "output_phrase_train.txt"],
    }
    return any((out / p).exists() for p in probes[source.key])


def _warn_split_sizes(source: DatasetSource, counts: dict[str, int]) -> None:
    if counts != source.paper_splits:
        print(
            f"note: {source.name} split sizes {counts} differ from the paper's {source.paper_splits}; "
            "check the download is complete"
        )


def _fetch_hub_archive(source: DatasetSource, out: Path) -> None:
    """Download the pinned archive (unless it was placed by hand), check sha256, extract in place."""
    ob = source.obtain
    archive = out / ob["filename"]
    if _layout_present(source, out):
        return
    if not archive.exists():
        archive = _hub_download(source, out)
    print(f"checking sha256 of {archive} ...")
    digest = sha256sum(archive)
    if digest != ob["sha256"]:
        raise FetchError(
            f"{archive}: sha256 {digest} does not match the published {ob['sha256']} "
            f"({ob['repo_id']}@{ob['revision']}); the file is corrupt or not the pinned version — "
            "delete it and fetch again"
        )
    _extract(archive, out)


def _hub_download(source: DatasetSource, out: Path) -> Path:
    ob = source.obtain
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(
            repo_id=ob["repo_id"],
            filename=ob["filename"],
            repo_type=ob["repo_type"],
            revision=ob["revision"],
            local_dir=out,
        )
    except Exception as err:  # network, auth, proxy: all end the same way for the user
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise FetchError(
            f"could not download {ob['filename']} from the Hugging Face Hub "
            f"({ob['repo_id']}@{ob['revision'][:12]}): {reason}\n{source.instructions(out)}"
        ) from None
    return Path(path)


def _extract(archive: Path, out: Path) -> None:
    """Extract the archive; an archive that wraps everything in one top folder is flattened."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if not n.startswith("__MACOSX/")]
            tops = {n.split("/", 1)[0] for n in names}
            prefix = f"{tops.pop()}/" if len(tops) == 1 and all("/" in n for n in names) else ""
            for name in names:
                target = out / name[len(prefix) :]
                if name.endswith("/") or not name[len(prefix) :]:
                    continue
                if out.resolve() not in target.resolve().parents:
                    raise FetchError(f"{archive}: entry {name!r} would extract outside {out}")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(name) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as err:
        raise FetchError(f"{archive}: not a valid zip archive ({err})") from None
