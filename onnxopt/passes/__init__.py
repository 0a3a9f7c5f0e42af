"""Graph passes: each takes a model and returns the new model plus what it changed."""

from onnxopt.passes.base import Pass, PassResult, Pipeline, StepReport

__all__ = ["Pass", "PassResult", "Pipeline", "StepReport"]
