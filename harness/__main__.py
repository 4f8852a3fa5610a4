"""Command line: `python -m harness report|export|check|gate|baseline|validate-gate|lock|compat ...` (--help).

Exit codes: report/export 0 success, 2 usage error; check 0 complete, 1 problems; gate 0 pass, 1 regression,
2 incomparable or usage error; baseline 0 written, 1 run failed (old baseline kept); validate-gate 0 when
the gate met issue 5's counts, 1 when not, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", description="NeuronMap Bench harness")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    rep = sub.add_parser("report", help="write report.md, report.html (self-contained) and charts from results files")
    rep.add_argument("results", nargs="+", type=Path, help="results JSON files or folders holding them")
    rep.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: beside the first results file, named after it: results/<run_id>/)",
    )
    rep.add_argument(
        "--baseline",
        nargs="+",
        action="extend",
        type=Path,
        default=None,
        help="baseline results files or folders to compare with (e.g. results/baselines/)",
    )

    exp = sub.add_parser("export", help="export for CI trackers: Bencher Metric Format or github-action-benchmark")
    exp.add_argument("results", nargs="+", type=Path, help="results JSON files or folders holding them")
    exp.add_argument(
        "--format",
        required=True,
        choices=("bmf", "gab"),
        help="bmf: Bencher Metric Format (every figure); gab: github-action-benchmark customSmallerIsBetter "
        "(latency and memory)",
    )
    exp.add_argument("--out", type=Path, default=None, help="output JSON file (default: standard output)")

    chk = sub.add_parser("check", help="exit 1 when a run has error verdicts or misses (suite, model) records")
    chk.add_argument("results", nargs="+", type=Path, help="results files or folders (the newest file is checked)")
    chk.add_argument("--models", default=None,
                     help="models that must have a record per suite: the --nm-models SPEC (default, all, "
                          "family:NAME, or a comma list)")

    gate = sub.add_parser("gate", help="compare CURRENT with BASELINE; exit 0 pass, 1 regression, 2 incomparable")
    gate.add_argument("baseline", type=Path, help="baseline results file or folder (all runs in it: one run)")
    gate.add_argument("current", type=Path, help="current results file or folder (shards of one run)")
    gate.add_argument("--latency-threshold", type=float, default=0.10, help="relative median slowdown (0.10)")
    gate.add_argument("--alpha", type=float, default=0.01, help="Mann-Whitney U significance level (0.01)")
    gate.add_argument("--latency-basis", choices=("reference", "raw"), default="reference",
                      help="judge latency per round relative to the model's own forward timed in the same rounds "
                           "(reference, default; raw where a run has no reference) or on raw samples (raw)")
    gate.add_argument("--strict-targets", action="store_true", help="every failing stated target regresses")
    gate.add_argument("--json", type=Path, default=None, help="also write the comparisons as JSON here")

    base = sub.add_parser("baseline", help="this CPU's committed baseline: `refresh` runs the main job and "
                          "replaces results/baselines/cpu/<cpu>/; `dir RESULTS` prints the folder a run belongs to")
    base.add_argument("action", choices=("refresh", "dir"))
    base.add_argument("results", nargs="*", type=Path, help="for `dir`: results files or folders")
    base.add_argument("--models", default="default", help="--nm-models of the baseline run (default)")
    base.add_argument("--profile", default="main", choices=("main", "full"), help="suite profile (main)")

    val = sub.add_parser("validate-gate", help="count the gate's A/A false alarms and injected-slowdown catches "
                         "over real suite runs (exit 0 when both reach trials - 1)")
    val.add_argument("--trials", type=int, default=20, help="pairs of each kind (20)")
    val.add_argument("--slowdown", type=float, default=0.15, help="injected extraction slowdown (0.15)")
    val.add_argument("--suite", default="suites/test_latency.py", help="suite file each run executes")
    val.add_argument("--models", default="gpt2", help="--nm-models of each run (gpt2)")
    val.add_argument("--out", type=Path, default=None, help="folder for the runs (results/gate-validation/)")
    lock = sub.add_parser("lock", help="print how the installed packages differ from the constraints file "
                          "($NM_LOCK, default constraints/tested.txt); always exit 0")
    lock.add_argument("file", nargs="?", type=Path, default=None, help="constraints file (default $NM_LOCK)")

    comp = sub.add_parser("compat", help="compatibility-matrix helpers (tox -m compat runs the matrix)")
    comp.add_argument("action", choices=("install-peers", "fixtures", "matrix"),
                      help="install-peers: the newest TransformerLens and nnsight that install beside this "
                           "environment's transformers and torch (within $NM_LOCK unless it is a latest env); "
                           "records the outcome for the peers rows; exit 0 either way. fixtures: build the shared "
                           "fixture checkpoints with this release (the matrix's lower bound does it first). "
                           "matrix: print the matrix of RESULTS (default results/compat)")
    comp.add_argument("results", nargs="*", type=Path, help="for matrix: results files or folders")
    return parser


def _cmd_lock(args: argparse.Namespace) -> int:
    from harness.lock import drift, format_drift

    print(format_drift(drift(args.file)))
    return 0


def _cmd_compat(args: argparse.Namespace) -> int:
    if args.action == "matrix":
        from harness.collate import load_runs
        from harness.compat_matrix import build_matrix, format_matrix

        try:
            runs = load_runs(args.results or [Path("results/compat")])
        except (FileNotFoundError, ValueError) as e:
            print(f"harness compat matrix: {e}", file=sys.stderr)
            return 2
        print(format_matrix(build_matrix(runs)))
        return 0
    if args.action == "fixtures":
        from harness.compat import FIXTURES, ensure_fixture

        for model_type in FIXTURES:
            folder, info = ensure_fixture(model_type)
            print(f"{model_type}: {folder} (built with transformers {info['built_with']}, sha {info['sha']})")
        return 0
    from harness.compat_install import install_peers

    print(install_peers())
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from harness.report import write_report
    from harness.results import find_run_files

    try:
        files = find_run_files(args.results)
    except (FileNotFoundError, ValueError) as e:
        print(f"harness report: {e}", file=sys.stderr)
        return 2
    if not files:
        where = ", ".join(map(str, args.results))
        print(f"harness report: no results files found in {where}", file=sys.stderr)
        return 2
    out = args.out if args.out is not None else files[0].parent / files[0].stem
    try:
        written = write_report(files, out, baseline=args.baseline)
    except (FileNotFoundError, ValueError) as e:  # a missing or unreadable --baseline
        print(f"harness report: {e}", file=sys.stderr)
        return 2
    for key, path in written.items():
        print(f"{key}: {path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from harness.export import dumps, export
    from harness.results import atomic_write_json

    try:
        data = export(args.results, args.format)
    except (FileNotFoundError, ValueError) as e:
        print(f"harness export: {e}", file=sys.stderr)
        return 2
    if not data:
        what = "latency or memory figures" if args.format == "gab" else "measured figures"
        print(f"harness export: no {what} in {', '.join(map(str, args.results))}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(dumps(data))
    else:
        atomic_write_json(args.out, data)
        print(f"{args.format}: {args.out}", file=sys.stderr)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from harness.check import check_run, newest_run

    try:
        path = newest_run(args.results)
    except (FileNotFoundError, ValueError) as e:
        print(f"harness check: {e}", file=sys.stderr)
        return 2
    models = None
    if args.models:
        from adapters import NeuronMapError, UniversalModelRegistry

        try:  # the same SPEC as --nm-models: default, all, family:NAME or a comma list
            models = UniversalModelRegistry().select(args.models)
        except NeuronMapError as e:
            print(f"harness check: --models {args.models!r}: {e}", file=sys.stderr)
            return 2
    problems = check_run(path, models)
    for p in problems:
        print(f"harness check: {p}", file=sys.stderr)
    print(f"harness check: {path.name}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def _cmd_gate(args: argparse.Namespace) -> int:
    import json

    from harness.gate import GateConfig, compare, exit_code, summarize
    from harness.results import load_records

    try:
        baseline, current = load_records([args.baseline]), load_records([args.current])
    except (FileNotFoundError, ValueError) as e:
        print(f"harness gate: {e}", file=sys.stderr)
        return 2
    if not baseline or not current:
        print("harness gate: no records in " + ("baseline" if not baseline else "current"), file=sys.stderr)
        return 2
    cfg = GateConfig(latency_basis=args.latency_basis, latency_threshold=args.latency_threshold, alpha=args.alpha,
                     strict_targets=args.strict_targets)
    comparisons = compare(baseline, current, cfg)
    print(summarize(comparisons))
    if args.json:
        args.json.write_text(json.dumps([c.to_dict() for c in comparisons], indent=1))
    return exit_code(comparisons)


def _cmd_baseline(args: argparse.Namespace) -> int:
    from harness.baseline import cpu_baseline_dir, refresh
    from harness.results import find_run_files

    if args.action == "dir":
        folder = cpu_baseline_dir(find_run_files(args.results)) if args.results else None
        if folder is None:
            print("harness baseline dir: give results files of one CPU model", file=sys.stderr)
            return 2
        print(folder)
        return 0
    try:
        print(f"baseline written to {refresh(args.models, args.profile)}; commit it")
    except RuntimeError as exc:
        print(f"harness baseline refresh: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_validate_gate(args: argparse.Namespace) -> int:
    from harness.gate_validation import Plan, describe, validate

    if args.trials < 1 or not 0 < args.slowdown < 10:
        print("harness validate-gate: --trials must be >= 1 and --slowdown in (0, 10)", file=sys.stderr)
        return 2
    plan = Plan(trials=args.trials, slowdown=args.slowdown, suite=args.suite, models=args.models)
    if args.out is not None:
        plan.out = args.out
    summary = validate(plan)
    print(describe(summary))
    return 0 if summary["verdict"] == "pass" else 1


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)  # exits 2 on bad arguments
    if args.command == "report":
        return _cmd_report(args)
    if args.command == "export":
        return _cmd_export(args)
    if args.command == "check":
        return _cmd_check(args)
    if args.command == "gate":
        return _cmd_gate(args)
    if args.command == "baseline":
        return _cmd_baseline(args)
    if args.command == "validate-gate":
        return _cmd_validate_gate(args)
    if args.command == "lock":
        return _cmd_lock(args)
    if args.command == "compat":
        return _cmd_compat(args)
    parser.print_usage(sys.stderr)
    print("python -m harness: error: a command is required (report)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
