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
from diffris.fileio import MARKER as FOLDER_MARKER
from diffris.fileio import OutputError, atomic_folder, sha256sum, write_json

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
    never leaves a folder that looks complete. Only an earlier fetch's own folder is replaced."""
    from diffris.data.synthetic import generate

    info = {"dataset": source.key, "source": "synthetic", "seed": seed, "image_size": image_size}

    def write(tmp: Path) -> None:
        generate(source.key, tmp, splits, image_size, seed)
        info["splits"] = verify_layout(source, tmp)
        write_json(tmp / MARKER, dict(info, files=file_sizes(tmp)))

    atomic_folder(out, write, "fetch")
    return info


def fetch_real(source: DatasetSource, out: Path) -> dict:
    """Verify (downloading and extracting where possible) the real dataset in ``out``; nothing in
    ``out`` is deleted. ``FETCHED.json`` is written last and lists every file's size, so a later
    fetch re-checks the whole folder against it; it is removed first whenever a check fails."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    recorded = _recorded_files(out)
    if recorded is not None and _first_changed(out, recorded) is None:
        counts = verify_layout(source, out)
        return _real_info(source, counts)
    (out / MARKER).unlink(missing_ok=True)
    if source.obtain["kind"] == "hub":
        listing = _fetch_hub_archive(source, out, force=recorded is not None)
    elif recorded is not None:
        changed = _first_changed(out, recorded)
        raise DataError(f"{changed}: differs from the verified copy listed in {MARKER}; place the dataset again")
    elif not _layout_present(source, out):
        raise FetchError(source.instructions(out))
    else:
        listing = None
    counts = verify_layout(source, out)
    if listing is None:
        decode_all(source, out)  # placed by hand: no listing to compare with, so read every file
    _warn_split_sizes(source, counts)
    info = _real_info(source, counts)
    write_json(out / MARKER, dict(info, files=file_sizes(out, skip=source.obtain.get("filename"))))
    return info


def _real_info(source: DatasetSource, counts: dict[str, int]) -> dict:
    info = {"dataset": source.key, "source": "real", "splits": counts}
    info.update({k: source.obtain[k] for k in ("repo_id", "revision", "filename", "sha256") if k in source.obtain})
    return info


def file_sizes(root: Path, skip: str | None = None) -> dict[str, int]:
    """Every file under ``root`` -> its size in bytes; not the markers, ``skip`` (the archive)
    or the Hub client's ``.cache/``."""
    ignored = {MARKER, FOLDER_MARKER, skip}
    files = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}
    return {rel: p.stat().st_size for rel, p in files.items() if rel not in ignored and not rel.startswith(".cache/")}


def _recorded_files(out: Path) -> dict[str, int] | None:
    try:
        files = json.loads((out / MARKER).read_text()).get("files")
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    return files if isinstance(files, dict) else None


def _first_changed(root: Path, files: dict[str, int]) -> Path | None:
    """The first listed file that is missing or has another size, or None."""
    for name, size in files.items():
        path = root / name
        if not path.is_file() or path.stat().st_size != size:
            return path
    return None


def decode_all(source: DatasetSource, root: Path) -> None:
    """Decode every image and mask once: a torn or unreadable file is named now, not mid-training."""
    from tqdm import tqdm

    for sample in tqdm(read_raw(source.key, root), desc=f"verify {source.name}", unit="sample", leave=False):
        sample.load_image()
        sample.load_mask()


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


def _fetch_hub_archive(source: DatasetSource, out: Path, force: bool) -> dict[str, int] | None:
    """Download the pinned archive (unless it was placed by hand), check sha256, extract in place.
    Returns the archive's listing (path -> size), or None when only the extracted layout was
    placed (no archive to check it against). ``force``: extract again even if the layout is there."""
    ob = source.obtain
    archive = out / ob["filename"]
    if not archive.exists():
        if _layout_present(source, out) and not force:
            return None
        archive = _hub_download(source, out)
    print(f"checking sha256 of {archive} ...")
    digest = sha256sum(archive)
    if digest != ob["sha256"]:
        raise FetchError(
            f"{archive}: sha256 {digest} does not match the published {ob['sha256']} "
            f"({ob['repo_id']}@{ob['revision']}); the file is corrupt or not the pinned version — "
            "delete it and fetch again"
        )
    return _extract(archive, out)


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


def _extract(archive: Path, out: Path) -> dict[str, int]:
    """Extract every entry (an archive that wraps everything in one top folder is flattened) and
    check each file's size against the listing. Every entry name is checked before anything is
    written, so a refused archive leaves nothing behind."""
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = _entries(zf, archive, out)
            for info, target in entries:
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as err:
        raise FetchError(f"{archive}: not a valid zip archive ({err})") from None
    listing = {target.relative_to(out).as_posix(): info.file_size for info, target in entries}
    changed = _first_changed(out, listing)
    if changed is not None:
        raise FetchError(f"{changed}: extracted with another size than {archive} lists; fetch again")
    return listing


def _entries(zf: zipfile.ZipFile, archive: Path, out: Path) -> list[tuple[zipfile.ZipInfo, Path]]:
    """(entry, target) of every file of the archive, all inside ``out``."""
    infos = [i for i in zf.infolist() if not i.filename.startswith("__MACOSX/")]
    names = [i.filename for i in infos]
    tops = {n.split("/", 1)[0] for n in names}
    prefix = f"{tops.pop()}/" if len(tops) == 1 and all("/" in n for n in names) else ""
    root, entries = out.resolve(), []
    for info in infos:
        rel = info.filename[len(prefix) :]
        if info.is_dir() or not rel:
            continue
        target = out / rel
        if root not in target.resolve().parents:
            raise FetchError(f"{archive}: entry {info.filename!r} would extract outside {out}; nothing was extracted")
        entries.append((info, target))
    return entries
