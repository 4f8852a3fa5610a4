"""Untrusted checkpoints and names: pickled weights only with allow_pickle=True (and then they load right),
remote code never imported by default, model names that cannot place files outside the results folder, and a
report that escapes every string it embeds, wherever in a record the string sits."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from adapters import MultiModelAnalyzer, UniversalModelRegistry, UnsafeWeightsError
from harness.report import write_report
from harness.results import Run, load_run, safe_component
from harness.targets import load_targets

TEXTS = ["hello world", "the cat sat on the mat"]


def _pickled_copy(src: Path, dest: Path) -> Path:
    """The same checkpoint with its weights as a pickled pytorch_model.bin instead of safetensors."""
    from safetensors.torch import load_file

    shutil.copytree(src, dest)
    torch.save(load_file(dest / "model.safetensors"), dest / "pytorch_model.bin")
    (dest / "model.safetensors").unlink()
    return dest


def test_pickled_weights_refused_by_default_and_identical_when_allowed(tiny_dirs: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    pickled = str(_pickled_copy(tiny_dirs["gpt2"], tmp_path / "pickled"))
    an = MultiModelAnalyzer()
    with pytest.raises(UnsafeWeightsError, match="allow_pickle=True"):
        an.load_model(pickled)
    assert not an.loaded_models
    an.load_model(pickled, allow_pickle=True)
    an.load_model(str(tiny_dirs["gpt2"]))
    try:
        got = an.extract_activations(pickled, TEXTS, [0, 1])
        want = an.extract_activations(str(tiny_dirs["gpt2"]), TEXTS, [0, 1])
        assert all(torch.equal(got[k], want[k]) for k in (0, 1))  # the pickled weights were really loaded
    finally:
        an.unload_all()


def test_remote_code_is_never_imported_by_default(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    """A checkpoint whose config asks for its own code: every entry point refuses, and the code never runs."""
    folder = tmp_path / "remote"
    shutil.copytree(tiny_dirs["gpt2"], folder)
    sentinel = tmp_path / "remote-code-ran"
    code = f"from pathlib import Path\nPath({str(sentinel)!r}).touch()\n"
    for module in ("configuration_evil", "modeling_evil"):
        (folder / f"{module}.py").write_text(code + "from transformers import GPT2Config as C, GPT2Model as M\n")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "configuration_evil.C", "AutoModelForCausalLM": "modeling_evil.M"}
    (folder / "config.json").write_text(json.dumps(cfg))
    registry = UniversalModelRegistry()
    calls = [lambda: MultiModelAnalyzer().load_model(str(folder)),
             lambda: registry.get_model_config(str(folder)),
             lambda: registry.detect_model_family(str(folder))]
    for call in calls:
        with pytest.raises(UnsafeWeightsError, match="trust_remote_code=True"):
            call()
    assert not sentinel.exists()


EVIL_NAMES = ["../../etc/x", "/etc/passwd", "a\x00b", "..\\..\\windows\\x", "~/x", ".hidden", "..", "a/../../b",
              "<script>alert(1)</script>", "x" * 300]


@pytest.mark.filterwarnings("ignore:Glyph 0:UserWarning")  # the NUL in a name, drawn in a chart
def test_model_names_cannot_place_files_outside_the_results_folder(tmp_path: Path) -> None:
    """A run whose records carry hostile model names: finish() and the report write only under results/,
    the names come back verbatim from the JSON, and every name maps to a file-name part that stays inside."""
    results = tmp_path / "sandbox" / "results"
    run = Run.start("pytest suites", results, load_targets(), environment={})
    for name in EVIL_NAMES:
        run.record(suite="latency", model=name, family="gpt", metric="extraction_latency", value=0.1, unit="s",
                   workload={"name": name})
    path = run.finish()
    write_report([path], path.parent / run.id)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and all(results.resolve() in p.resolve().parents for p in files), files
    assert [r["model"] for r in load_run(path)["records"] if r["suite"] == "latency"] == EVIL_NAMES
    for name in EVIL_NAMES:  # what the plugin uses for test ids, and any per-model file name
        part = safe_component(name)
        assert (results / part).resolve().parent == results.resolve() and "\x00" not in part


def test_report_escapes_every_string_it_embeds(tmp_path: Path) -> None:
    """Markup in any string field of a record or run (model, family, device, dtype, workload, metric, error,
    extra, command) comes out as text: no tag survives in report.html or report.md."""
    tag = '`<img src=x onerror="alert(1)">`'  # the backticks try to break out of Markdown code spans
    run = Run.start(f"pytest {tag}", tmp_path, load_targets(), environment={"note": tag})
    fields = dict(family=f"gpt{tag}", device=f"cpu{tag}", dtype=f"float32{tag}", workload={"name": tag, tag: tag},
                  extra={"fingerprint": {tag: tag}, "why": tag})
    run.record(suite=f"latency{tag}", model=f"m{tag}", metric="extraction_latency", value=0.1, unit="s", **fields)
    run.record(suite="memory", model=f"m{tag}", metric=f"peak_memory{tag}", value=None, unit="GB",
               error=f"boom {tag}", **fields)
    run.record(suite="memory", model=f"m{tag}", metric="peak_memory", value=0.5, unit=f"GB{tag}", **fields)
    out = write_report([run.finish()], tmp_path / "report")
    html = out["html"].read_text()
    md = out["report"].read_text()
    assert "onerror" in html and "onerror" in md  # the strings are there ...
    assert not re.findall(r'<img(?! src="data:image/png;base64,)', html)  # ... but never as markup (charts aside)
    assert html.count("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;") >= 3
    # Markdown shows a code span literally; outside code spans no tag may survive
    assert "<img" not in re.sub(r"`[^`\n]*`", "", md)

