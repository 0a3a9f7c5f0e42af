"""What the accuracy searches measure: a quantized model's drop against the fp32 model, by kind
(encoders: output fidelity or STS Spearman; decoders: perplexity through the cache)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from onnxopt.data.samples import input_types
from onnxopt.data.sts_pairs import StsPair
from onnxopt.evaluate.sts import sts_score
from onnxopt.runtime.generation import Decoder
from onnxopt.runtime.sessions import session_for_model
from onnxopt.runtime.similarity import cosine


class FidelityDrop:
    """Drop = 100 x (1 - mean cosine) of the first output against fp32, on held-back samples."""

    name = "fidelity"

    def __init__(self, reference: onnx.ModelProto, feeds: Sequence[dict]):
        self.feeds = list(feeds)
        session = session_for_model(reference)
        self.expected = [session.run(None, feed)[0].astype(np.float64).ravel() for feed in self.feeds]

    def __call__(self, model: onnx.ModelProto) -> float:
        session = session_for_model(model)
        cosines = []
        for feed, want in zip(self.feeds, self.expected, strict=True):
            cosines.append(cosine(session.run(None, feed)[0].astype(np.float64), want))
        return float(100 * (1 - np.mean(cosines)))


class StsDrop:
    """Drop = fp32 Spearman (x100) minus the model's, on an STS pairs file."""

    name = "sts"

    def __init__(self, reference: onnx.ModelProto, pairs: list[StsPair], tokenizer, types, seq_len: int):
        self.pairs, self.tokenizer, self.types, self.seq_len = pairs, tokenizer, types, seq_len
        self.reference_score = self._score(reference)

    def _score(self, model: onnx.ModelProto) -> float:
        session = session_for_model(model)
        return sts_score(session, self.tokenizer, self.types, self.pairs, self.seq_len)

    def __call__(self, model: onnx.ModelProto) -> float:
        return self.reference_score - self._score(model)


class PerplexityDrop:
    """Drop = 100 x (perplexity / fp32's perplexity - 1) on held-back text, read through the cache."""

    name = "perplexity"

    def __init__(
        self, reference: onnx.ModelProto, ids: np.ndarray, layout, int_type, context: int, chunk: int
    ):
        self.ids, self.layout, self.int_type = ids, layout, int_type
        self.context, self.chunk = context, chunk
        self.reference = self.perplexity(reference)

    @classmethod
    def of(cls, model: onnx.ModelProto, ids: np.ndarray, context: int, chunk: int) -> PerplexityDrop:
        types = input_types(model)
        return cls(model, ids, types.cache, types.get("input_ids", np.int64), context, chunk)

    def perplexity(self, model: onnx.ModelProto) -> float:
        decoder = Decoder(session_for_model(model), self.layout, self.int_type)
        return float(np.exp(-decoder.token_log_likelihoods(self.ids, self.chunk, self.context).mean()))

    def __call__(self, model: onnx.ModelProto) -> float:
        return 100.0 * (self.perplexity(model) / self.reference - 1.0)
