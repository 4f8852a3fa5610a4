"""pytest plugin: model selection, one results run per suite session, results + report at the end.

Loaded for every pytest run (`-p harness.plugin` in pyproject); it opens a results run only when the
session runs tests under suites/, so the unit tests never write results.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.results import Run, safe_component

REPO = Path(__file__).resolve().parent.parent
SUITES_DIR = REPO / "suites"
_RUN_KEY = pytest.StashKey[Run]()
_REPORT_KEY = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("neuronmap", "NeuronMap Bench")
    group.addoption("--nm-models", default=None, metavar="SPEC",
                    help="models to run: 'default' (one per family), 'all', 'family:t5', or a comma list")
    group.addoption("--nm-results", default=str(REPO / "results"), metavar="DIR",
                    help="folder for results/<run>.json, its report and pytest-benchmark's JSON")
    group.addoption("--nm-no-report", action="store_true", help="write results but no plots or report")
    group.addoption("--nm-inject-slowdown", type=float, default=0.0, metavar="FRACTION",
                    help="validation of the gate only: make every extraction FRACTION slower (busy wait)")


def _is_suite_run(config: pytest.Config) -> bool:
    for arg in config.args:
        path = (Path(config.invocation_params.dir) / arg.split("::")[0]).resolve()
        if path == SUITES_DIR or SUITES_DIR in path.parents:
            return True
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if not _is_suite_run(config) or hasattr(config, "workerinput"):
        return
    from harness.targets import load_targets

    results_dir = Path(config.getoption("nm_results"))
    results_dir.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["pytest", *config.invocation_params.args])
    run = Run.start(command, results_dir, load_targets())
    config.stash[_RUN_KEY] = run
    slowdown = config.getoption("nm_inject_slowdown")
    if slowdown:
        _inject_slowdown(slowdown)
        run.environment["injected_slowdown"] = slowdown
    if config.pluginmanager.hasplugin("benchmark") and getattr(config.option, "benchmark_json", None) is None:
        # pytest-benchmark's own JSON (all raw timings) sits beside ours, same run id
        config.option.benchmark_json = open(results_dir / f"{run.id}.benchmark.json", "wb")  # noqa: SIM115


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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "nm_model" in metafunc.fixturenames:
        from adapters import UniversalModelRegistry

        models = UniversalModelRegistry().select(metafunc.config.getoption("nm_models"))
        metafunc.parametrize("nm_model", models, ids=[safe_component(m) for m in models])


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


REDUCED_DEPTH = 2  # models bigger than the machine run here at this many blocks per stack, real width


def load_options(registry: Any, name: str) -> dict[str, Any]:
    """Suite load options for a model: registered `large` models run at reduced depth, real width."""
    return {"depth": REDUCED_DEPTH} if registry.get_model_config(name).large else {}


class LoadedModels:
    """In-process models for the suites that time calls; one at a time keeps memory predictable."""

    def __init__(self) -> None:
        from adapters import MultiModelAnalyzer

        self.analyzer = MultiModelAnalyzer()

    def get(self, name: str) -> Any:
        if name not in self.analyzer.loaded_models:
            self.analyzer.unload_all()
            self.analyzer.load_model(name, **load_options(self.analyzer.registry, name))
        return self.analyzer.loaded_models[name]

    def close(self) -> None:
        self.analyzer.unload_all()


@pytest.fixture(scope="session")
def nm_loaded() -> Iterator[LoadedModels]:
    models = LoadedModels()
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
