"""Loading options of issue 4: dtype, device maps planned on the meta device, RAM caps and disk offload,
sharding plans for GPUs that are not here, unload, and get_memory_usage's fields."""

from __future__ import annotations

import shutil

import pytest
import torch
import transformers

from adapters import InvalidInputError, MultiModelAnalyzer, OutOfMemoryError, UniversalModelAdapter, compat, memory
from adapters.registry import UniversalModelRegistry

TEXT = ["hello world the cat sat on the mat"]


@pytest.fixture
def analyzer():
    an = MultiModelAnalyzer()
    yield an
    for adapter in an.loaded_models.values():  # tiny models: dropping them is enough (no full gc per test)
        adapter.model = None
        if adapter._offload_dir is not None:
            shutil.rmtree(adapter._offload_dir, ignore_errors=True)
    an.loaded_models.clear()


@pytest.mark.parametrize(("value", "expected"), [
    (123, 123), (1.5e9, 1_500_000_000), ("8GB", 8 * 10**9), ("8 GiB", 8 * 2**30), ("512MB", 512 * 10**6),
    ("1.5GB", 1_500_000_000), ("100", 100), ("2kib", 2048),
])
def test_parse_bytes(value, expected):
    assert memory.parse_bytes(value) == expected


@pytest.mark.parametrize("bad", ["eight GB", "-1GB", -5, True, None, [1], "8 PB"])
def test_parse_bytes_rejects(bad):
    with pytest.raises(InvalidInputError):
        memory.parse_bytes(bad)


@pytest.mark.parametrize(("name", "dtype"), [("float32", torch.float32), ("float16", torch.float16),
                                             ("bf16", torch.bfloat16)])
def test_dtype_option(analyzer, tiny_dirs, name, dtype):
    adapter = analyzer.load_model(str(tiny_dirs["gpt2"]), dtype=name)
    assert adapter.dtype == dtype
    assert {p.dtype for p in adapter.model.parameters()} == {dtype}
    acts = adapter.extract_activations(TEXT, [0, -1])
    assert acts[0].dtype == dtype and torch.isfinite(acts[0].float()).all()


@pytest.mark.parametrize("device", [{"": "gpu"}, {"x": -1}, {"": 1.5}, {}, "tpu", "cuda:x" * 0 or "mps0"])
def test_bad_devices_are_typed_errors(device):
    with pytest.raises(InvalidInputError):
        memory.resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_a_typed_error(analyzer, tiny_dirs):
    with pytest.raises(InvalidInputError, match="CUDA is not available"):
        analyzer.load_model(str(tiny_dirs["gpt2"]), device="cuda")


def test_max_memory_needs_a_device_map(analyzer, tiny_dirs):
    with pytest.raises(InvalidInputError, match="device='auto'"):
        analyzer.load_model(str(tiny_dirs["gpt2"]), device="cpu", max_memory={"cpu": "1GB"})
    with pytest.raises(InvalidInputError, match="max_memory key"):
        analyzer.load_model(str(tiny_dirs["gpt2"]), device="auto", max_memory={"gpu0": "1GB"})


@pytest.mark.parametrize("kind", ["gpt2", "t5"])  # decoder-only and encoder-decoder; llama: the float16 test
def test_auto_with_disk_offload_matches_in_ram(analyzer, tiny_dirs, kind):
    path = str(tiny_dirs[kind])
    ref = analyzer.load_model(path).extract_activations(TEXT, [0, -1])
    analyzer.unload_model(path)
    adapter = analyzer.load_model(path, device="auto", max_memory={"cpu": 1000})
    plan = adapter.plan.summary()
    assert plan["blocks"].get("disk", 0) >= 2 and adapter.device == "cpu"
    offload_dir = adapter._offload_dir
    assert offload_dir is not None and offload_dir.is_dir()
    acts = adapter.extract_activations(TEXT, [0, -1])
    for k in (0, -1):
        assert torch.equal(acts[k], ref[k])
    assert analyzer.unload_model(path) is True
    assert not offload_dir.exists()  # the temporary offload folder goes with the model


def test_auto_splits_cpu_and_disk(analyzer, tiny_dirs):
    """A budget of a few blocks keeps the first ones in RAM and offloads the rest."""
    path = str(tiny_dirs["llama"])
    cfg = transformers.AutoConfig.from_pretrained(path)
    meta = memory.meta_model(cfg, transformers.LlamaForCausalLM, torch.float32)
    _, _, _, block = memory.describe_device_map(meta, {"": "cpu"})
    embed = meta.model.embed_tokens.weight.numel() * 4
    adapter = analyzer.load_model(path, device="auto", max_memory={"cpu": embed + 2 * block + 100})
    blocks = adapter.plan.blocks_per_device
    assert blocks.get("cpu", 0) >= 1 and blocks.get("disk", 0) >= 1, blocks
    resident = memory.resident_bytes(adapter.model)
    assert resident.get("cpu", 0) < adapter.plan.total_bytes
    assert torch.isfinite(adapter.extract_activations(TEXT, [-1])[-1]).all()


def test_explicit_nested_device_map_is_flattened(analyzer, tiny_dirs):
    path = str(tiny_dirs["gpt2"])
    ref = analyzer.load_model(path).extract_activations(TEXT, [1])
    analyzer.unload_model(path)
    adapter = analyzer.load_model(path, device={"": "cpu", "transformer.h.1": "disk"})
    assert adapter.plan.device_map["transformer.h.1"] == "disk"
    assert adapter.plan.device_map["transformer.h.0"] == "cpu"
    assert "" not in adapter.plan.device_map
    assert torch.equal(adapter.extract_activations(TEXT, [1])[1], ref[1])


def test_explicit_map_with_max_memory_is_refused(analyzer, tiny_dirs):
    with pytest.raises(InvalidInputError, match="one or the other"):
        analyzer.load_model(str(tiny_dirs["gpt2"]), device={"": "cpu"}, max_memory={"cpu": "1GB"})


def test_auto_without_max_memory_uses_the_documented_ram_cap(analyzer, tiny_dirs, monkeypatch):
    monkeypatch.setattr(memory, "default_ram_cap_bytes", lambda: 10**12)
    adapter = analyzer.load_model(str(tiny_dirs["gpt2"]), device="auto")
    assert adapter.plan.blocks_per_device == {"cpu": 2}
    assert adapter.plan.ram_cap_bytes == 10**12
    assert "RAM cap" in adapter.plan.notes[0]


def test_default_ram_cap_is_half_of_available(monkeypatch):
    class VM:
        available = 10_000_000_000

    monkeypatch.setattr(memory.psutil, "virtual_memory", lambda: VM())
    assert memory.default_ram_cap_bytes() == int(10_000_000_000 * memory.AUTO_RAM_FRACTION) == 5_000_000_000


def test_a_ram_cap_below_the_process_is_out_of_memory(analyzer, tiny_dirs):
    with pytest.raises(OutOfMemoryError, match="leaves no room"):
        analyzer.load_model(str(tiny_dirs["gpt2"]), device="auto", ram_cap="100MB")


def test_stored_half_precision_is_cast_after_loading(analyzer, tiny_dirs, tmp_path):
    """float16 on disk, float32 asked, one block on disk: exact against the in-RAM float32 load."""
    src = transformers.AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"], **compat.dtype_kwargs(torch.float16))
    src.save_pretrained(tmp_path)
    transformers.AutoTokenizer.from_pretrained(tiny_dirs["llama"]).save_pretrained(tmp_path)
    path = str(tmp_path)
    ref = analyzer.load_model(path).extract_activations(TEXT, [0, 1])
    analyzer.unload_model(path)
    adapter = analyzer.load_model(path, device={"": "cpu", "model.layers.1": "disk"})
    assert {p.dtype for p in adapter.model.parameters()} == {torch.float32}
    acts = adapter.extract_activations(TEXT, [0, 1])
    assert torch.equal(acts[0], ref[0]) and torch.equal(acts[1], ref[1])


# ---- plans for hardware that is not here (meta device only) ------------------------------------------
@pytest.fixture(scope="module")
def gptj():
    config = UniversalModelRegistry().get_model_config("EleutherAI/gpt-j-6B")
    return config.build_hf_config(), transformers.GPTJForCausalLM


def test_two_gpu_sharding_plan_for_gpt_j(gptj):
    cfg, cls = gptj
    plan = memory.plan_device_map(cfg, cls, torch.float16, {0: "7GB", 1: "7GB", "cpu": "2GB"})
    assert plan.total_bytes == pytest.approx(12.1e9, rel=0.01)  # 6.05B parameters in float16
    assert plan.blocks_per_device.get("0", 0) > 5 and plan.blocks_per_device.get("1", 0) > 5
    assert sum(plan.blocks_per_device.values()) == plan.num_blocks == 28
    assert memory.main_device_of(plan.device_map) == "cuda:0"
    # "cuda:1" spelling of a key is accepted too
    again = memory.plan_device_map(cfg, cls, torch.float16, {"cuda:0": "7GB", "cuda:1": "7GB", "cpu": "2GB"})
    assert again.device_map == plan.device_map


def test_gpu_cpu_disk_plan_for_gpt_j(gptj):
    cfg, cls = gptj
    plan = memory.plan_device_map(cfg, cls, torch.float32, {0: "6GB", "cpu": "6GB"})
    assert set(plan.blocks_per_device) == {"0", "cpu", "disk"}
    assert plan.offloads_to_disk
    assert plan.bytes_per_device["0"] <= 6e9 and plan.bytes_per_device["cpu"] <= 6e9
    assert plan.summary()["total_gb"] == pytest.approx(24.2, rel=0.01)


def test_ram_cap_plan_for_gpt_j_keeps_the_cpu_part_under_the_cap(gptj):
    cfg, cls = gptj
    plan = memory.plan_device_map(cfg, cls, torch.float32, {"cpu": "100GB"}, ram_cap_bytes=8 * 10**9)
    assert plan.bytes_per_device["cpu"] < 8e9 - memory.RAM_CAP_SLACK_BYTES
    assert plan.blocks_per_device["disk"] > 15


# ---- unload and usage -------------------------------------------------------------------------------
def test_unload_removes_dispatch_hooks_and_kills_the_model(analyzer, tiny_dirs):
    path = str(tiny_dirs["gpt2"])
    adapter = analyzer.load_model(path, device="auto", max_memory={"cpu": 1000})
    hooked = [m for m in adapter.model.modules() if hasattr(m, "_hf_hook") and m is not adapter.model]
    assert hooked
    ref = adapter.unload()
    assert ref() is None and adapter.last_unload["weakref_dead"] is True
    assert all(not hasattr(m, "_hf_hook") for m in hooked)  # (a child held here does not hold its parent)
    del analyzer.loaded_models[path]


def test_memory_usage_fields_are_documented_and_never_fake_zero():
    usage = memory.get_memory_usage()
    assert set(usage) == {"process_rss_gb", "process_peak_rss_gb", "system_memory_gb", "system_total_gb",
                          "system_available_gb", "gpu_memory_gb", "gpu_reserved_gb", "gpu_devices",
                          "nvml_used_gb"}
    assert usage["process_rss_gb"] > 0 and usage["system_total_gb"] > usage["system_available_gb"] > 0
    assert usage["process_peak_rss_gb"] is None or usage["process_peak_rss_gb"] >= usage["process_rss_gb"] * 0.99
    if not torch.cuda.is_available():
        assert usage["gpu_memory_gb"] is None and usage["gpu_reserved_gb"] is None and usage["gpu_devices"] == []
    else:
        assert {"index", "allocated_gb", "reserved_gb", "total_gb"} <= set(usage["gpu_devices"][0])
    assert usage["nvml_used_gb"] is None or usage["nvml_used_gb"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_unload_returns_allocated_memory_to_baseline(tiny_dirs):
    before = memory.cuda_allocated()
    adapter = UniversalModelAdapter()
    adapter.load_model(str(tiny_dirs["gpt2"]), device="cuda")
    assert memory.cuda_allocated()[0] > before[0]
    adapter.extract_activations(TEXT, [0])
    ref = adapter.unload()
    assert ref() is None
    assert adapter.last_unload["cuda_returned_to_baseline"] is True
    assert memory.cuda_allocated() == before


def test_auto_without_max_memory_on_two_gpus_balances_90_percent(gptj, monkeypatch):
    """The default plan where two GPUs are free (faked: the plan is computed on the meta device only)."""
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "get_max_memory", lambda *a, **k: {0: 10 * 10**9, 1: 10 * 10**9,
                                                                            "cpu": 10**12})
    monkeypatch.setattr(memory, "default_ram_cap_bytes", lambda: 4 * 10**9)
    cfg, cls = gptj
    plan = memory.plan_device_map(cfg, cls, torch.float16)
    assert plan.max_memory[0] <= 9 * 10**9 and plan.max_memory[1] <= 9 * 10**9
    assert plan.blocks_per_device.get("0", 0) > 5 and plan.blocks_per_device.get("1", 0) > 5
    assert plan.bytes_per_device["0"] <= 9e9 and plan.ram_cap_bytes == 4 * 10**9
