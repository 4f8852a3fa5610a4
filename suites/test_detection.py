"""Family detection: every registered model by name, config and module tree; the labelled set per tier,
with the original design's substring rule measured on the same set as the baseline."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch

from suites.common import check_verdict

# the head a hub checkpoint of that type usually has: seq2seq and masked-LM types also register decoder-only
# "ForCausalLM" variants, which are not what their checkpoints hold
_AUTO_BY_KIND = ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
                 "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "MODEL_MAPPING_NAMES")


def meta_module(hf_config: Any) -> torch.nn.Module:
    """The model a config describes, laid out on the meta device (no memory, real size), config removed."""
    import transformers
    from transformers.models.auto import modeling_auto

    cls = None
    for arch in getattr(hf_config, "architectures", None) or ():
        cls = getattr(transformers, arch, None) or cls
    if cls is None:
        for table in _AUTO_BY_KIND:
            name = getattr(modeling_auto, table).get(hf_config.model_type)
            if name:
                cls = getattr(transformers, name if isinstance(name, str) else name[0])
                break
    with torch.device("meta"):
        model = cls(hf_config)
    del model.config  # the module tier must see the tree only
    return model


def registered_tiers(registry: Any, name: str) -> dict[str, tuple[str, str]]:
    """(expected, got) per tier for one registered model."""
    from adapters.families import ModelFamily, family_from_config, family_from_module, family_from_name

    config = registry.get_model_config(name)
    family = config.family
    arch = ModelFamily.BERT if family is ModelFamily.DOMAIN_SPECIFIC else family
    hf = config.build_hf_config()
    hf._name_or_path = name  # what from_pretrained sets: a loaded config carries its id
    out = {}
    for tier, expected, fn, arg in (("name", family, family_from_name, name),
                                    ("config", family, family_from_config, hf),
                                    ("module", arch, lambda c: family_from_module(meta_module(c)),
                                     config.build_hf_config())):
        try:
            got = fn(arg)
            got = got.value if got is not None else None
        except Exception as exc:  # a tier that raises has not answered
            got = f"{type(exc).__name__}: {exc}"
        out[tier] = (expected.value, got)
    return out


def test_detection_registered(benchmark, nm_model, nm_registry, nm_record):
    tiers = benchmark.pedantic(registered_tiers, args=(nm_registry, nm_model), rounds=1, iterations=1)
    correct = sum(expected == got for expected, got in tiers.values())
    config = nm_registry.get_model_config(nm_model)
    record = nm_record("detection", {"name": nm_model, "family": config.family.value}, "detection_accuracy",
                       correct / len(tiers), "fraction",
                       extra={"tiers": {k: {"expected": e, "got": g} for k, (e, g) in tiers.items()}})
    check_verdict(record)


def labelled_set_scores() -> dict[str, Any]:
    """Accuracy per tier of NeuronMap's detection and of the original rule, with failures and confusions."""
    from transformers import AutoConfig

    from adapters.detection_set import config_for, load_detection_set, score, shipped_by_installed
    from adapters.families import family_from_config, family_from_module, family_from_name, original_rule

    entries = load_detection_set()
    shipped, not_shipped = shipped_by_installed(entries)  # older releases lack newer types' configs and modules
    modules: dict[str, Any] = {}

    def module_family(entry: dict[str, Any]) -> Any:
        mt = entry["model_type"]
        if mt not in modules:
            try:
                modules[mt] = family_from_module(meta_module(AutoConfig.for_model(mt)))
            except Exception as exc:  # an architecture that cannot be laid out counts as a wrong answer
                modules[mt] = f"{type(exc).__name__}: {exc}"
        return modules[mt]

    detectors = {
        "name": lambda e: family_from_name(e["id"]),
        "config": lambda e: family_from_config(config_for(e, full=True)),
        "module": module_family,
    }
    def text(value: Any) -> str:
        return str(getattr(value, "value", value))

    out: dict[str, Any] = {"entries": len(entries), "neuronmap": {}, "original_rule": {},
                           "not_shipped": sorted({e["model_type"] for e in not_shipped})}
    for tier, fn in detectors.items():
        scored = entries if tier == "name" else shipped
        acc, failures = score(scored, tier, fn)
        out["neuronmap"][tier] = {"accuracy": acc, "failures": [[text(x) for x in f] for f in failures],
                                  "entries": len(scored)}
    acc, failures = score(entries, "name", lambda e: original_rule(e["id"]))
    out["original_rule"]["name"] = {"accuracy": acc, "failures": [[text(x) for x in f] for f in failures],
                                    "entries": len(entries)}
    out["confusion"] = {
        tier: dict(Counter(f"{f[1]}->{f[2]}" for f in out["neuronmap"][tier]["failures"]))
        for tier in detectors
    }
    return out


@pytest.mark.parametrize("method", ["neuronmap", "original_rule"])
def test_detection_labelled_set(benchmark, method, nm_run):
    """NeuronMap's tiers are judged against the targets; the original rule is recorded beside them as the
    baseline (metric prefix `baseline_`, so it is reported, compared, and never mistaken for the tool)."""
    scores = benchmark.pedantic(labelled_set_scores, rounds=1, iterations=1)
    records = []
    tiers = scores[method]
    prefix = "" if method == "neuronmap" else "baseline_"
    for tier, result in tiers.items():
        records.append(nm_run.record(
            suite="detection", model=None, metric=f"{prefix}detection_accuracy_{tier}", value=result["accuracy"],
            unit="fraction", workload={"name": "labelled_set", "entries": scores["entries"], "method": method},
            extra={"failures": result["failures"][:50], "failure_count": len(result["failures"]),
                   "confusion": scores["confusion"].get(tier) if method == "neuronmap" else None,
                   "scored_entries": result["entries"],
                   "not_shipped_types": scores["not_shipped"] if result["entries"] < scores["entries"] else []},
        ))
    pooled = sum(t["accuracy"] for t in tiers.values()) / len(tiers)
    records.append(nm_run.record(
        suite="detection", model=None, metric=f"{prefix}detection_accuracy", value=pooled, unit="fraction",
        workload={"name": "labelled_set", "entries": scores["entries"], "method": method,
                  "tiers": sorted(tiers)},
        extra={"definition": "mean of the per-tier accuracies over the labelled set"},
    ))
    for record in records:
        check_verdict(record)
