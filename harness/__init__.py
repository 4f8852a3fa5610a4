"""NeuronMap Bench's measuring instrument.

Kept separate from `adapters/` (the system under test) so that what measures never depends on what is
measured. One concern per module: timing, memory, isolate (fresh-process runs), env, targets, results,
report; `python -m harness` is the command line. Submodules are imported on use, so importing the package
stays cheap (no torch, no matplotlib).
"""

SCHEMA_NAME = "neuronmap-bench-results"
SCHEMA_VERSION = "1.3"

__all__ = ["SCHEMA_NAME", "SCHEMA_VERSION"]
