"""Write a constraints (lock) file: the versions pip resolves today for this project beside one transformers.

    python scripts/lock.py                                   # constraints/tested.txt: newest releases, peers pinned
    python scripts/lock.py --transformers 4.57.6             # constraints/transformers-4.57.txt (matrix version)

It installs, in a throwaway venv, torch first ($NM_TORCH, default torch==2.13.0: the build every environment
shares), then this project with its test extras (and, with --peers, TransformerLens and nnsight where a
released version installs beside that transformers), and freezes the result without torch and the project
itself. Run it when you move the tested versions on purpose, run the tests on the new lock, commit both.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SKIP = re.compile(r"^(torch|triton|nvidia-[a-z0-9-]+|neuronmap-bench)==", re.I)
PEERS = ("transformer-lens", "nnsight")


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, text=True, capture_output=True)


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args])


def lock(transformers: str | None, extras: str, peers: str, out: Path, also: list[str] | None = None,
         why: str | None = None) -> int:
    torch = os.environ.get("NM_TORCH", "torch==2.13.0")
    with tempfile.TemporaryDirectory(prefix="nm-lock-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        if (done := _pip(python, torch)).returncode:
            print(done.stderr, file=sys.stderr)
            return 1
        pins = ([f"transformers=={transformers}"] if transformers else []) + list(also or [])
        target = f"{REPO}[{extras}]" if extras else str(REPO)
        note = "peers: none asked"
        attempts = ([[*pins, "-e", target, *PEERS]] if peers == "resolve" else []) + [[*pins, "-e", target]]
        if peers == "extra":
            attempts = [[*pins, "-e", f"{REPO}[{extras},peers]" if extras else f"{REPO}[peers]"]]
        for i, args in enumerate(attempts):
            done = _pip(python, *args)
            if done.returncode == 0:
                if peers == "resolve":
                    note = ("peers: the newest TransformerLens and nnsight that install beside it" if i == 0
                            else "peers: no released TransformerLens/nnsight installs beside it")
                elif peers == "extra":
                    note = "peers: the versions pyproject's [peers] extra pins"
                break
            print(done.stderr[-2000:], file=sys.stderr)
        else:
            return 1
        freeze = _run([str(python), "-m", "pip", "freeze", "--exclude-editable"]).stdout.splitlines()
        installed_torch = _run([str(python), "-c", "import torch; print(torch.__version__)"]).stdout.strip()
    lines = sorted((ln for ln in freeze if "==" in ln and not SKIP.match(ln)), key=str.lower)
    header = [
        f"# Versions tested together ({'transformers ' + transformers if transformers else 'newest releases'}).",
        f"# Written by `python scripts/lock.py{' --transformers ' + transformers if transformers else ''}` on "
        f"{datetime.date.today().isoformat()}, Python {sys.version.split()[0]}, beside torch {installed_torch} "
        "(installed first, not pinned here: NM_TORCH chooses the build).",
        f"# Extras: {extras or 'none'}; {note}.",
        *([f"# Also required: {', '.join(also)}: {why}"] if also else []),
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join([*header, *lines]) + "\n", encoding="utf-8")
    print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out} ({len(lines)} pins)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transformers", default=None, help="exact transformers version (default: newest)")
    parser.add_argument("--extras", default="test,gguf", help="project extras to install (test,gguf)")
    parser.add_argument("--peers", choices=("extra", "resolve", "none"), default=None,
                        help="extra: pyproject's pinned [peers] (default without --transformers); resolve: the "
                             "newest that install beside --transformers (default with it); none")
    parser.add_argument("--out", type=Path, default=None, help="output file (default under constraints/)")
    parser.add_argument("--also", action="append", default=[], metavar="REQ",
                        help="an extra requirement where pip's own choice does not work together (repeatable)")
    parser.add_argument("--why", default=None, help="why --also is needed (written into the lock's header)")
    args = parser.parse_args(argv)
    if args.also and not args.why:
        parser.error("--also needs --why: the lock must say why it departs from pip's own choice")
    peers = args.peers or ("resolve" if args.transformers else "extra")
    if args.out is None:
        name = "tested.txt" if not args.transformers else \
            "transformers-" + ".".join(args.transformers.split(".")[:2]) + ".txt"
        args.out = REPO / "constraints" / name
    return lock(args.transformers, args.extras, peers, args.out, args.also, args.why)


if __name__ == "__main__":
    sys.exit(main())
