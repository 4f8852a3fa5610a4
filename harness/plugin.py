"""pytest plugin: model selection, device and dtype, sharding, one results run per suite session.

Loaded for every pytest run (`-p harness.plugin` in pyproject); it opens a results run only when the
session runs tests under suites/, so the unit tests never write results.

Sharding (`--nm-shard i/n`, 1-based): the selected models, sorted by name, are dealt round-robin — model k
(0-based, in sorted order) goes to shard k mod n + 1. Round-robin rather than a hash keeps shards within one
model of each other in size, and sorting makes it independent of the order of --nm-models; the price is
that adding a model can move others to another shard, which does not matter because `harness report` and
`harness gate` read all shards' results files together as one run. Tests that take no model (the labelled
detection set) are dealt the same way over their sorted node ids, so each runs in exactly one shard.
Several GPUs of one machine: one pytest process per GPU, each pinned with CUDA_VISIBLE_DEVICES and given
its own shard (scripts/gpu_check.sh --gpus N); not pytest-xdist, under which pytest-benchmark disables itself.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.results import Run, safe_component

REPO = Path(__file__).resolve().parent.parent
SUITES_DIR = REPO / "suites"
_RUN_KEY = pytest.StashKey[Run]()
_REPORT_KEY = pytest.StashKey[dict]()

DEVICES = ("cpu", "cuda", "auto")
PROFILES = ("main", "full")
EXTENDED_MARK = "nm_extended"
DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def parse_device(text: str) -> str:
    """--nm-device: cpu | cuda | cuda:N | auto (accelerate's device map over every visible GPU)."""
    t = text.strip().lower()
    if t in DEVICES:
        return t
    if t.startswith("cuda:") and t[5:].isdigit():
        return t
    raise argparse.ArgumentTypeError(f"{text!r} is not one of cpu, cuda, cuda:N, auto")


def parse_dtype(text: str) -> str:
    """--nm-dtype: float32 | float16 | bfloat16 (fp32, fp16, half, bf16 accepted), canonical name returned."""
    t = text.strip().lower()
    if t in DTYPES:
        return DTYPES[t]
    raise argparse.ArgumentTypeError(f"{text!r} is not one of float32, float16, bfloat16 (or fp32, fp16, bf16)")


def parse_shard(text: str) -> tuple[int, int]:
    """--nm-shard i/n with 1 <= i <= n -> (i, n)."""
    try:
        i_text, n_text = text.strip().split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not of the form i/n (e.g. 1/4)") from None
    if n < 1 or not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"shard {text!r}: need 1 <= i <= n")
    return i, n


def shard_items(names: Iterable[str], shard: tuple[int, int] | None) -> list[str]:
    """The names that belong to `shard` (i, n): round-robin over the sorted distinct names; input order kept.

    None (no sharding) keeps every name. Deterministic and independent of input order, so separate
    processes given the same selection agree without talking to each other.
    """
    names = list(dict.fromkeys(names))
    if shard is None:
        return names
    i, n = shard
    mine = {name for k, name in enumerate(sorted(names)) if k % n == i - 1}
    return [name for name in names if name in mine]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("neuronmap", "NeuronMap Bench")
    group.addoption("--nm-models", default=None, metavar="SPEC",
                    help="models to run: 'default' (one per family), 'all', 'family:t5', or a comma list")
    group.addoption("--nm-results", default=str(REPO / "results"), metavar="DIR",
                    help="folder for results/<run>.json, its report and pytest-benchmark's JSON")
    group.addoption("--nm-no-report", action="store_true", help="write results but no plots or report")
    group.addoption("--nm-inject-slowdown", type=float, default=0.0, metavar="FRACTION",
                    help="validation of the gate only: make every extraction FRACTION slower (busy wait)")
    group.addoption("--nm-device", type=parse_device, default="cpu", metavar="DEVICE",
                    help="device models load on: cpu (default), cuda, cuda:N, or auto (accelerate device map "
                         "over every visible GPU); timing synchronises CUDA")
    group.addoption("--nm-dtype", type=parse_dtype, default=None, metavar="DTYPE",
                    help="float32 | float16 | bfloat16 (fp16, bf16); default: float32 on CPU, the checkpoint's "
                         "own dtype on CUDA")
    group.addoption("--nm-profile", choices=PROFILES, default="main",
                    help="main (default): the checks every run needs - detection, API consistency, latency, peak "
                         "memory, reclamation, token alignment; full: also the suites marked nm_extended "
                         "(overhead ratios, scaling, context length, soak, memory management, peers). An "
                         "extended suite named on the command line runs in either profile")
    group.addoption("--nm-malloc", choices=("pinned", "default"), default="pinned",
                    help="pinned (default): fix glibc's mmap/trim thresholds for the run (harness.memory.pin_malloc) "
                         "so timings do not depend on the process's allocation history; default: leave glibc's "
                         "dynamic thresholds. Recorded in each record's fingerprint: the two do not compare")
    group.addoption("--nm-shard", type=parse_shard, default=None, metavar="I/N",
                    help="run shard I of N: models dealt round-robin over their sorted names (1-based); "
                         "give every shard's results to `harness report`/`harness gate` as one run")


def _is_suite_run(config: pytest.Config) -> bool:
    for arg in config.args:
        path = (Path(config.invocation_params.dir) / arg.split("::")[0]).resolve()
        if path == SUITES_DIR or SUITES_DIR in path.parents:
            return True
    return False


def device_options(config: pytest.Config) -> dict[str, Any]:
    """{"device": ..., "dtype": ...} from --nm-device/--nm-dtype, as load_model and the probes take them."""
    return {"device": config.getoption("nm_device", "cpu"), "dtype": config.getoption("nm_dtype", None)}


def _check_device(config: pytest.Config) -> None:
    """Fail at once, with the reason, when CUDA is asked for and absent (not one error per test later)."""
    device = config.getoption("nm_device", "cpu")
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise pytest.UsageError(
            f"--nm-device {device}: CUDA is not available here (torch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda}); use a CUDA build of torch on a machine with an NVIDIA GPU and driver")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise pytest.UsageError(f"--nm-device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{EXTENDED_MARK}: a suite of the full profile (--nm-profile full)")
    if not _is_suite_run(config) or hasattr(config, "workerinput"):
        return
    _check_device(config)
    from harness.targets import load_targets

    results_dir = Path(config.getoption("nm_results"))
    results_dir.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["pytest", *config.invocation_params.args])
    run = Run.start(command, results_dir, load_targets())
    config.stash[_RUN_KEY] = run
    shard = config.getoption("nm_shard")
    run.environment["suite_options"] = {
        **device_options(config),
        "profile": config.getoption("nm_profile"),
        "shard": None if shard is None else {"index": shard[0], "count": shard[1], "models": None},
    }
    run.environment["malloc"] = _malloc(config.getoption("nm_malloc"))
    slowdown = config.getoption("nm_inject_slowdown")
    if slowdown:
        _inject_slowdown(slowdown)
        run.environment["injected_slowdown"] = slowdown
    if config.pluginmanager.hasplugin("benchmark") and getattr(config.option, "benchmark_json", None) is None:
        # pytest-benchmark's own JSON (all raw timings) sits beside ours, same run id
        config.option.benchmark_json = _JsonTarget(results_dir / f"{run.id}.benchmark.json")


def _malloc(mode: str) -> dict[str, Any]:
    """Apply --nm-malloc before any model loads; what the run's records say about the allocator."""
    from harness.memory import pin_malloc

    if mode == "pinned":
        applied = pin_malloc()
        return {"mode": "pinned", **applied} if applied else {"mode": "unavailable (no glibc)"}
    return {"mode": "default"}


def _inject_slowdown(fraction: float) -> None:
    """Wrap the extraction path so each call takes (1 + fraction) times as long (a known, real slowdown)."""
    import time

    from adapters.base import UniversalModelAdapter

    original = UniversalModelAdapter.extract_activations

    def slowed(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = original(self, *args, **kwargs)
        until = time.perf_counter() + fraction * (time.perf_counter() - start)
        while time.perf_counter() < until:
            pass
        return out

    UniversalModelAdapter.extract_activations = slowed  # type: ignore[method-assign]


class _JsonTarget(os.PathLike):
    """pytest-benchmark's --benchmark-json value: a path for 5.3+ (which opens it), an open-able context
    manager for 5.2 (which writes through `with value as fh`); created only when written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: Any = None

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __enter__(self) -> Any:
        self._fh = open(self.path, "wb")
        return self._fh

    def __exit__(self, *exc: Any) -> None:
        self._fh.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "nm_model" in metafunc.fixturenames:
        from adapters import UniversalModelRegistry

        config = metafunc.config
        models = shard_items(UniversalModelRegistry().select(config.getoption("nm_models")),
                             config.getoption("nm_shard"))
        run = config.stash.get(_RUN_KEY, None)
        shard_info = (run.environment.get("suite_options") or {}).get("shard") if run is not None else None
        if shard_info is not None:
            shard_info["models"] = models
        metafunc.parametrize("nm_model", models, ids=[safe_component(m) for m in models])


def _named_files(config: pytest.Config) -> set[Path]:
    """The test files the command line names itself (not reached through a folder)."""
    base = Path(config.invocation_params.dir)
    return {(base / arg.split("::")[0]).resolve() for arg in config.args if arg.split("::")[0].endswith(".py")}


def _skip_extended(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In the main profile, suites marked nm_extended skip (with the reason) unless their file is named."""
    if config.getoption("nm_profile", None) != "main":
        return
    named = _named_files(config)
    skip = pytest.mark.skip(reason="extended suite: runs with --nm-profile full, or name its file "
                                   "(e.g. pytest suites/test_overhead.py --benchmark-only)")
    for item in items:
        if item.get_closest_marker(EXTENDED_MARK) and Path(str(item.path)).resolve() not in named:
            item.add_marker(skip)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip extended suites outside the full profile; under --nm-shard, deal the tests that take no model
    round-robin over their sorted node ids."""
    _skip_extended(config, items)
    shard = config.getoption("nm_shard")
    if shard is None:
        return
    modelless = [item.nodeid for item in items if "nm_model" not in getattr(item, "fixturenames", ())]
    keep = set(shard_items(modelless, shard))
    selected, deselected = [], []
    for item in items:
        if "nm_model" in getattr(item, "fixturenames", ()) or item.nodeid in keep:
            selected.append(item)
        else:
            deselected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


@pytest.fixture(scope="session")
def nm_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The results run of this session (a throw-away one when suites run outside a suite session)."""
    config = request.config
    if _RUN_KEY not in config.stash:
        from harness.targets import load_targets

        config.stash[_RUN_KEY] = Run.start("pytest", tmp_path_factory.mktemp("results"), load_targets())
    return config.stash[_RUN_KEY]


@pytest.fixture(scope="session")
def nm_registry() -> Any:
    from adapters import UniversalModelRegistry

    return UniversalModelRegistry()


@pytest.fixture
def nm_record(nm_run: Run) -> Callable[..., Any]:
    """Add a record for a model: `nm_record(suite, info, metric, value, unit, ...)`; info = adapter.info()."""

    def record(suite: str, info: dict[str, Any], metric: str, value: float | None, unit: str,
               **kwargs: Any) -> Any:
        from harness.fingerprint import fingerprint

        weights = info.get("weights")
        extra = {**kwargs.pop("extra", {}), "fingerprint": fingerprint(nm_run.environment, info)}
        return nm_run.record(
            suite=suite, model=info.get("name"), family=info.get("family"),
            weights=weights if weights in ("pretrained", "synthetic") else None,
            device=info.get("device"), dtype=info.get("dtype"), metric=metric, value=value, unit=unit, extra=extra,
            **kwargs,
        )

    return record


_RECORDS_BEFORE = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Remember how many records the run held before this test, to see what the test itself recorded."""
    run = item.config.stash.get(_RUN_KEY, None)
    if run is not None:
        item.stash[_RECORDS_BEFORE] = len(run.records)


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    """A model's test that crashed (load failure, exception mid-forward, out of memory) becomes an `error`
    record with the exception's message, so the fault is in the results and the report, not only in the
    pytest log. Assertion failures are verdicts the test recorded itself; a test that already wrote an
    `error` record for its model is covered. Returns None: pytest builds the report as usual."""
    excinfo = call.excinfo
    params = getattr(getattr(item, "callspec", None), "params", {})
    run = item.config.stash.get(_RUN_KEY, None)
    if (excinfo is None or call.when == "teardown" or "nm_model" not in params or run is None
            or run.path is not None or not excinfo.errisinstance(Exception)
            or excinfo.errisinstance(AssertionError)):
        return
    model = params["nm_model"]
    since = item.stash.get(_RECORDS_BEFORE, len(run.records))
    if any(r.model == model and r.verdict == "error" for r in run.records[since:]):
        return
    exc = excinfo.value
    torch = sys.modules.get("torch")
    oom_types = (MemoryError, torch.OutOfMemoryError) if torch is not None else (MemoryError,)
    chain: BaseException | None = exc
    oom = False
    while chain is not None and not oom:  # an OOM inside a forward arrives wrapped (ExtractionError)
        oom, chain = isinstance(chain, oom_types), chain.__cause__
    try:
        from adapters import UniversalModelRegistry

        family: str | None = UniversalModelRegistry().get_model_config(model).family.value
    except Exception:  # an unregistered or broken entry still gets its error record
        family = None
    metric = getattr(item, "originalname", item.name).removeprefix("test_")
    target = run.targets.find(metric, model=model, family=family)
    run.record(suite=Path(str(item.path)).stem.removeprefix("test_"), model=model, family=family,
               metric=metric, value=None, unit=target.unit if target is not None else "",
               workload={k: v for k, v in params.items() if k != "nm_model" and isinstance(v, str | int | float)},
               error=f"{type(exc).__name__}: {exc}"[:4000],
               extra={"test": item.nodeid, "phase": call.when, "exception": type(exc).__qualname__,
                      "out_of_memory": oom})


REDUCED_DEPTH = 2  # models bigger than the machine run here at this many blocks per stack, real width


def load_options(registry: Any, name: str) -> dict[str, Any]:
    """Suite load options for a model: registered `large` models run at reduced depth, real width."""
    return {"depth": REDUCED_DEPTH} if registry.get_model_config(name).large else {}


class LoadedModels:
    """In-process models for the suites that time calls; one at a time keeps memory predictable.

    `device` and `dtype` (from --nm-device/--nm-dtype) go to every load_model call.
    """

    def __init__(self, device: str | None = None, dtype: str | None = None) -> None:
        from adapters import MultiModelAnalyzer

        self.analyzer = MultiModelAnalyzer()
        self.device = device
        self.dtype = dtype

    def get(self, name: str) -> Any:
        if name not in self.analyzer.loaded_models:
            self.analyzer.unload_all()
            self.analyzer.load_model(name, device=self.device, dtype=self.dtype,
                                     **load_options(self.analyzer.registry, name))
        return self.analyzer.loaded_models[name]

    def close(self) -> None:
        self.analyzer.unload_all()


@pytest.fixture(scope="session")
def nm_device_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """{"device": ..., "dtype": ...} chosen with --nm-device/--nm-dtype, for suites that load models themselves
    (e.g. the isolated memory probes, whose functions take `device` and `dtype`)."""
    return device_options(request.config)


@pytest.fixture(scope="session")
def nm_loaded(nm_device_options: dict[str, Any]) -> Iterator[LoadedModels]:
    models = LoadedModels(**nm_device_options)
    yield models
    models.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    run = config.stash.get(_RUN_KEY, None)
    if run is None or run.path is not None or not _is_suite_run(config):
        return
    if not run.records:
        return
    path = run.finish()
    outputs: dict[str, Any] = {"results": path}
    if not config.getoption("nm_no_report"):
        try:
            from harness.report import write_report

            outputs.update(write_report([path], path.parent / run.id))
        except Exception as exc:  # the results file is the product; a plotting failure must not lose it
            outputs["report_error"] = f"{type(exc).__name__}: {exc}"
    config.stash[_REPORT_KEY] = outputs


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    outputs = config.stash.get(_REPORT_KEY, None)
    run = config.stash.get(_RUN_KEY, None)
    if not outputs or run is None:
        return
    counts: dict[str, int] = {}
    for r in run.records:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    terminalreporter.section("NeuronMap Bench")
    terminalreporter.write_line("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for key, value in outputs.items():
        terminalreporter.write_line(f"{key}: {value}")
    sys.stdout.flush()
