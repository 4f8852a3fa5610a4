"""Synthetic results files that exercise every section of the report and every export (no models run).

`make_run` writes one run with latency (raw samples), peak memory, reclamation, scaling sweeps, detection
(registered models' tiers and a labelled set with confusions), a `baseline_*` record, an error whose model
name and message carry HTML, and fingerprints. `slowdown` scales gpt2's latency (a regression for the
gate); `seed` varies the noise between runs.
"""

from __future__ import annotations

import random
from pathlib import Path

from harness.reference import REFERENCE_KIND
from harness.results import Record, Run
from harness.targets import load_targets
from harness.timing import stats_from_samples

EVIL = '<script>alert("x")</script>'
FAKE_ENV = {
    "git": {"commit": "0123456789abcdef", "dirty": True},
    "cpu": {"model": "Test CPU", "usable_cores": 2},
    "packages": {"torch": "2.x", "transformers": "5.x", "accelerate": "1.x"},
    "torch": {"threads": 2},
    "gpus": None,
}
COMMON = {"weights": "synthetic", "device": "cpu", "dtype": "float32"}
MODELS = {  # model: (family, seed latency s, batch latency s, peak GB, reclaimed fraction)
    "gpt2": ("gpt", 0.09, 1.7, 0.62, 0.93),
    "EleutherAI/gpt-neo-125M": ("gpt", 0.11, 1.3, 1.2, 0.85),
    "bert-base-uncased": ("bert", 0.05, 1.0, 0.55, 0.99),
    "t5-small": ("t5", 0.03, 0.4, 0.3, 0.97),
}


def paired_latency(machine: float, code: float = 1.0, seed: int = 0, kind: str = REFERENCE_KIND, n: int = 30,
                   fingerprint: dict | None = None) -> Record:
    """A latency record whose rounds each carry a reference sample (harness.reference): both scale with
    `machine` and share a round-to-round wobble, only the extraction scales with `code`. Samples stay in round
    order (the gate pairs them)."""
    rng = random.Random(seed)
    wobble = [machine * rng.uniform(0.9, 1.1) for _ in range(n)]
    ext = [code * w * rng.uniform(0.99, 1.01) for w in wobble]
    ref = [0.5 * w * rng.uniform(0.99, 1.01) for w in wobble]
    return Record(suite="latency", model="m", metric="extraction_latency", unit="s", value=sorted(ext)[n // 2],
                  stats={"samples": ext, "reference": {"kind": kind, "texts": 1, "samples": ref}},
                  workload={"name": "seed"}, extra={"fingerprint": fingerprint or _fp("m")})


def _fp(model: str) -> dict:
    return {
        "adapter_source": "54046e525c1be644",
        "model_config": f"cfg-{len(model)}",
        "weights": "synthetic",
        "dtype": "float32",
        "device": "cpu",
        "libraries": {"torch": "2.x", "transformers": "5.x", "accelerate": "1.x"},
        "hardware": {"cpu": "Test CPU", "cores": 2, "gpus": []},
    }


def make_run(results_dir: Path, *, seed: int = 0, slowdown: float = 1.0, run_id: str | None = None,
             scaling: bool = True, detection: bool = True, evil: bool = True) -> Path:
    rng = random.Random(seed)
    run = Run.start("pytest suites/ --benchmark-only", results_dir, load_targets(), environment=FAKE_ENV,
                    run_id=run_id)

    def samples(base: float, n: int) -> list[float]:
        return [base * rng.uniform(0.97, 1.03) for _ in range(n)]

    for model, (family, small, big, gb, frac) in MODELS.items():
        f = slowdown if model == "gpt2" else 1.0
        extra = {"fingerprint": _fp(model)}
        for wl, base, n in (
            ({"name": "seed", "texts": 1, "tokens_per_text": 2, "layers": [0, 6, 11]}, small * f, 30),
            ({"name": "batch8x128", "texts": 8, "tokens_per_text": 128, "layers": [0, 6, 11]}, big * f, 8),
        ):
            st = stats_from_samples(samples(base, n))
            run.record(suite="latency", model=model, family=family, workload=wl, metric="extraction_latency",
                       value=st.median, unit="s", stats=st.to_dict(), extra=extra, **COMMON)
            run.record(suite="memory", model=model, family=family, workload=wl, metric="peak_memory",
                       value=gb * (0.7 if wl["name"] == "seed" else 1.0) * rng.uniform(0.995, 1.005), unit="GB",
                       extra={**extra, "probe": {"method": "vmhwm"}}, **COMMON)
        run.record(suite="reclamation", model=model, family=family, metric="reclamation", value=frac,
                   unit="fraction", extra={**extra, "before_bytes": 400_000_000, "loaded_bytes": 900_000_000,
                                           "after_bytes": 420_000_000, "weakref_dead": True}, **COMMON)
        run.record(suite="api_consistency", model=model, family=family, metric="api_consistency", value=1.0,
                   unit="fraction", extra=extra, **COMMON)
        if scaling and model != "EleutherAI/gpt-neo-125M":
            for name, xs in (("scaling-seq", (16, 64, 256, 1024)), ("scaling-batch", (1, 4, 16, 64))):
                for x in xs:
                    seq, batch = (x, 1) if name == "scaling-seq" else (64, x)
                    wl = {"name": name, "seq_len": seq, "batch": batch, "layers": [0, 6, 11]}
                    lat = small * (seq / 16) ** 0.9 * batch**0.95 * rng.uniform(0.98, 1.02)
                    st = stats_from_samples(samples(lat, 5))
                    run.record(suite="scaling", model=model, family=family, workload=wl,
                               metric="extraction_latency", value=st.median, unit="s", stats=st.to_dict(),
                               extra=extra, **COMMON)
                    mem = 0.0 if x == xs[0] else 2e-5 * seq * batch * {"t5": 1.3, "gpt": 1.6}.get(family, 1.0)
                    run.record(suite="scaling", model=model, family=family, workload=wl,
                               metric="extraction_peak_memory", value=mem, unit="GB", extra=extra, **COMMON)
    if detection:
        for model, (family, *_rest) in MODELS.items():
            got_module = "gpt" if model == "t5-small" else family  # one wrong tier
            tiers = {"name": {"expected": family, "got": family}, "config": {"expected": family, "got": family},
                     "module": {"expected": family, "got": got_module}}
            ok = sum(t["expected"] == t["got"] for t in tiers.values())
            run.record(suite="detection", model=model, family=family, metric="detection_accuracy",
                       value=ok / 3, unit="fraction", extra={"tiers": tiers})
        for tier, fails in (
            ("name", [["humarin/t5-paraphraser", "t5", "gpt"]]),
            ("config", []),
            ("module", [["facebook/esm2_t6_8M", "bert", "TypeError: empty(): argument 'size' <bad>"],
                        ["openai/whisper-tiny", "t5", "gpt"], ["microsoft/phi-2", "gpt", "llama"]]),
        ):
            conf: dict[str, int] = {}
            for _id, e, g in fails:
                conf[f"{e}->{g}"] = conf.get(f"{e}->{g}", 0) + 1
            run.record(suite="detection", model=None, metric=f"detection_accuracy_{tier}",
                       value=1 - len(fails) / 483, unit="fraction",
                       workload={"name": "labelled_set", "entries": 483, "method": "neuronmap"},
                       extra={"failures": fails, "failure_count": len(fails), "confusion": conf})
        run.record(suite="detection", model=None, metric="baseline_detection_accuracy_name", value=0.46,
                   unit="fraction", workload={"name": "labelled_set", "entries": 483, "method": "original_rule"},
                   extra={"failures": [["EleutherAI/pythia-70m", "gpt", "domain_specific"]], "failure_count": 261,
                          "confusion": None})
    if evil:
        run.record(suite="memory", model=EVIL, family="gpt", metric="device_mapping_large", value=None, unit="bool",
                   error=f'MemoryError | while\nloading "{EVIL}" & more', **COMMON)
    return run.finish()


def make_history(results_dir: Path, n: int = 4, slow_last: float = 1.0) -> list[Path]:
    """`n` runs in start order; the last one's gpt2 latency scaled by `slow_last`."""
    return [make_run(results_dir, seed=i, slowdown=slow_last if i == n - 1 else 1.0,
                     run_id=f"20260101T00000{i}Z-00000{i}", scaling=i == n - 1, detection=i == n - 1)
            for i in range(n)]
