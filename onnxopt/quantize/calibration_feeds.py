"""What a decoder is calibrated on: the feeds it gets while generating, not only prefills.

A decoder serves one token at a time after the prompt, reading its KV cache; calibrated on
prompts alone, the cache inputs would only ever have been empty and the activations of a
one-token step never seen. So each calibration text is prefilled and then continued greedily
for DECODE_STEPS tokens by the fp32 model, and every feed of that generation (the prefill and
each step, with its real cache) is a calibration sample.
"""

from __future__ import annotations

import numpy as np

from onnxopt.data.samples import TokenizedSamples
from onnxopt.runtime.generation import Decoder
from onnxopt.runtime.sessions import session_for_model

DECODE_STEPS = 8


def generation_feeds(
    model, samples: TokenizedSamples, max_positions: int | None, steps: int = DECODE_STEPS
) -> list[dict[str, np.ndarray]]:
    """The feeds of a greedy generation of `steps` tokens after each sample, prefill first; prompts
    are cut so prompt and continuation fit in `max_positions`."""
    cache = samples.types.cache
    decoder = Decoder(session_for_model(model), cache, samples.types.get("input_ids", np.int64))
    feeds = []
    for feed in samples:
        ids = feed["input_ids"]
        if max_positions is not None:
            ids = ids[:, : max(1, max_positions - steps - 1)]
        feeds += list(decoder.recorded_feeds(ids, steps))
    return feeds
