"""Graph passes: each takes a model and returns a PassResult (the model, whether it changed, what
it did), and declares whether it works in place (see base.py). Rewrites of local patterns are
rules (rewrite.py), one per file (cpu_int8_layout/)."""

from onnxopt.passes.base import Pass, PassContractError, PassResult, Pipeline, StepReport

__all__ = ["Pass", "PassContractError", "PassResult", "Pipeline", "StepReport"]
