"""The text a one-graph quantize run reads (calibration, held-back samples, STS pairs), read before
any heavy work so bad input fails fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxopt.data.samples import TokenizedSamples, input_types, load_tokenizer
from onnxopt.data.sources import embedded_samples, load_samples
from onnxopt.data.sts_pairs import load_sts_pairs
from onnxopt.errors import OnnxoptError
from onnxopt.evaluate.generation import cache_context
from onnxopt.io import limits
from onnxopt.quantize.calibration_feeds import generation_feeds
from onnxopt.quantize.inputs import check_int4_search
from onnxopt.quantize.plan import DECODER, QuantizePlan

HOLDOUT = 32  # held-back samples for the accuracy-aware search
# Decoders are judged by perplexity on held-back text: 96 sentences of the embedded corpus are
# about 2,000 SmolLM2 tokens; 32 (~650 tokens) moved its int4 figure by 1-2 points between halves.
DECODER_HOLDOUT = 96


@dataclass
class RunData:
    """The text a run needs: calibration feeds (a part's recorded feeds for encoder-decoders)."""

    calibration: object = None  # TokenizedSamples, or a list of feeds
    holdout: TokenizedSamples | None = None
    tokenizer: object = None
    pairs: list | None = None
    perplexity_ids: object = None  # held-back text as token ids, for decoders' --max-drop
    context: int = 0  # tokens the decoder's cache may hold


def read_data(ref, model, plan: QuantizePlan) -> RunData:
    config, decoder = plan.options, plan.kind == DECODER
    check_int4_search(plan.kind, config.mode, config.max_drop, ref.name)
    if config.eval_data and decoder:
        raise OnnxoptError(
            "--eval-data takes STS pairs, which score encoders; a decoder's --max-drop is its rise "
            "in perplexity (%) on held-back text",
            "drop --eval-data; --calib-data FILE chooses the text (the rest past --calib is held back)",
        )
    data = RunData(pairs=load_sts_pairs(Path(config.eval_data)) if config.eval_data else None)
    if not (plan.calibrated or config.max_drop is not None or plan.smooth or plan.block_search):
        return data  # dynamic int8 or RTN/HQQ int4 without smoothing reads no text
    data.tokenizer = load_tokenizer(ref.folder)
    types = input_types(model)
    holdout = DECODER_HOLDOUT if decoder else HOLDOUT
    wanted = config.calib + (holdout if config.max_drop is not None else 0)
    if config.calib_data:
        samples = load_samples(config.calib_data, wanted, config.text_column)
    else:
        samples = embedded_samples(wanted, clip=config.max_drop is not None)
    # Accuracy checks use samples calibration never saw, when the data has enough of them.
    data.calibration = TokenizedSamples(samples[: config.calib], data.tokenizer, types, config.seq_len)
    data.holdout = TokenizedSamples(
        samples[config.calib :] or samples[:HOLDOUT], data.tokenizer, types, config.seq_len
    )
    limit = limits.max_sequence_length(ref.folder)
    if plan.calibrated and decoder:  # a decoder: calibrated on what it sees generating
        data.calibration = generation_feeds(model, data.calibration, limit[0] if limit else None)
    if decoder and config.max_drop is not None:
        held = [s if isinstance(s, str) else " ".join(s) for s in samples[config.calib :] or samples]
        data.perplexity_ids = np.array(data.tokenizer("\n\n".join(held))["input_ids"], dtype=np.int64)
        data.context = cache_context(ref.folder)
    return data
