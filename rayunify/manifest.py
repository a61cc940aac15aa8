"""A checkpoint's manifest: every file's size and SHA-256, written last, so a checkpoint is whole exactly when
its manifest exists and every file still matches it.

Pure: json, hashlib and pathlib only. `write_manifest` reads each file once (after it was written and
flushed); `verify_manifest` reads them again on resume, so a zeroed, truncated or missing file is found
before anything loads it.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

MANIFEST = "MANIFEST.json"
FORMAT = 1
_CHUNK = 1 << 20


class ManifestError(ValueError):
    """A checkpoint that does not match its manifest (or has none); the message names the first bad file."""


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(root: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Checksum every file under `root` (fsynced first, so the manifest never vouches for data still in the
    page cache) and write the manifest last, itself fsynced. `meta`: what a reader wants without loading
    the checkpoint (its step, how many metric rows the run had logged)."""
    paths = _files(root)
    for path in paths:
        _fsync(path)
    digests = _digests(paths)
    files = {
        str(p.relative_to(root)): {"size": p.stat().st_size, "sha256": d}
        for p, d in zip(paths, digests, strict=True)
    }
    manifest = {"format": FORMAT, **meta, "files": files}
    target = root / MANIFEST
    target.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    _fsync(target)
    return manifest


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{root.name}: no {MANIFEST} (the save did not finish)")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, OSError) as err:
        raise ManifestError(f"{root.name}: {MANIFEST} is unreadable ({err})") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("files"), dict)
    ):
        raise ManifestError(f"{root.name}: {MANIFEST} is not a format-{FORMAT} manifest")
    return manifest


def verify_manifest(root: Path, checksums: bool = True) -> dict[str, Any]:
    """The manifest, once every file it lists exists with its size (and, with `checksums`, its SHA-256);
    else ManifestError naming the first file that does not match."""
    manifest = read_manifest(root)
    listed = sorted(manifest["files"].items())
    for name, expected in listed:
        path = root / name
        if not path.is_file():
            raise ManifestError(f"{root.name}: {name} is missing")
        size = path.stat().st_size
        if size != expected["size"]:
            raise ManifestError(f"{root.name}: {name} has {size} bytes, the manifest says {expected['size']}")
    if checksums:
        digests = _digests([root / name for name, _ in listed])
        for (name, expected), digest in zip(listed, digests, strict=True):
            if digest != expected["sha256"]:
                raise ManifestError(
                    f"{root.name}: {name} does not match its checksum (changed after it was saved)"
                )
    return manifest


def _digests(paths: list[Path]) -> list[str]:
    """SHA-256 of each file, several at once (hashlib releases the GIL: a checkpoint's shards hash in
    parallel rather than on one core, about 750 MiB/s each)."""
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(paths)))) as pool:
        return list(pool.map(file_digest, paths))


def manifest_bytes(manifest: dict[str, Any]) -> int:
    return sum(int(entry["size"]) for entry in manifest["files"].values())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
