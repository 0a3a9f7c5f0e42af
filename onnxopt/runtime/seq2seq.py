"""Generation through an encoder-decoder in parts (onnxopt.io.parts) with onnxruntime: the encoder
once per prompt, the decoder's first step (the start token; it returns the self-attention cache
and the cross-attention cache of the encoder's states), then the decoder with past one token at a
time, each step feeding its `present.*.decoder.*` back and the cross-attention cache unchanged.

It mirrors onnxopt.runtime.generation.Decoder: greedy generation, the feeds of a generation
(calibration), and timing (the encoder and first step are the time to the first token).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from onnxopt.errors import OnnxoptError, cut
from onnxopt.io.model_info import ModelInfo
from onnxopt.io.parts import SEQ2SEQ_PARTS

_PAST, _PRESENT = "past_key_values.", "present."


def _int_type(session, name: str):
    kind = next((i.type for i in session.get_inputs() if i.name == name), "tensor(int64)")
    return np.int32 if kind == "tensor(int32)" else np.int64


class Seq2Seq:
    """Three sessions (encoder, decoder, decoder_with_past) and the decoder's start token."""

    shares_cache = False  # its decoders' presents are copied back as the next past

    def __init__(self, sessions: dict, start_token: int, end_token: int | None = None):
        self.sessions = sessions
        self.start_token, self.end_token = start_token, end_token
        self.inputs = {part: {i.name for i in s.get_inputs()} for part, s in sessions.items()}
        self.outputs = {part: [o.name for o in s.get_outputs()] for part, s in sessions.items()}
        self.int_type = _int_type(sessions["encoder"], "input_ids")

    @classmethod
    def load(cls, folder: Path | ModelInfo, settings=None) -> Seq2Seq:
        """The runner of a folder in parts (or its ModelInfo), its start and end tokens read from
        config.json."""
        from onnxopt.runtime.sessions import make_session

        info = ModelInfo.read(folder)
        files = info.parts
        if files is None:
            raise OnnxoptError(
                f"{cut(str(info.path))} is not an encoder-decoder in parts",
                "export it with `onnxopt export` (text2text-generation keeps its parts)",
            )
        sessions = {p: make_session(files[p], "cpu", settings=settings) for p in SEQ2SEQ_PARTS}
        return cls(sessions, info.decoder_start_token, info.end_token)

    def next_token(self, logits: np.ndarray) -> np.ndarray:
        """The most likely token of the last position, never the end token: like generate() with
        min_new_tokens, every prompt gets its full number of tokens."""
        logits = logits[:, -1, :].copy()
        if self.end_token is not None and self.end_token < logits.shape[-1]:
            logits[:, self.end_token] = -np.inf
        return logits.argmax(-1)

    def run(self, part: str, feed: dict) -> dict[str, np.ndarray]:
        feed = {k: v for k, v in feed.items() if k in self.inputs[part]}
        return dict(zip(self.outputs[part], self.sessions[part].run(self.outputs[part], feed), strict=True))

    def encoder_feed(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        return {"input_ids": ids.astype(self.int_type), "attention_mask": np.ones(ids.shape, self.int_type)}

    def first_feed(self, encoder_feed: dict, hidden: np.ndarray) -> dict[str, np.ndarray]:
        batch = len(hidden)
        start = np.full((batch, 1), self.start_token, self.int_type)
        mask = encoder_feed["attention_mask"]
        return {"input_ids": start, "encoder_hidden_states": hidden, "encoder_attention_mask": mask}

    def feeds(self, ids: np.ndarray, new_tokens: int) -> Iterator[tuple[str, dict, dict]]:
        """(part, feed, outputs) of every run of a greedy generation of `new_tokens` tokens."""
        feed = self.encoder_feed(ids)
        values = self.run("encoder", feed)
        yield "encoder", feed, values
        mask = feed["attention_mask"]
        feed = self.first_feed(feed, values["last_hidden_state"])
        values = self.run("decoder", feed)
        yield "decoder", feed, values
        cache = {n.replace(_PRESENT, _PAST, 1): v for n, v in values.items() if n.startswith(_PRESENT)}
        for _ in range(new_tokens - 1):
            token = self.next_token(values["logits"])[:, None].astype(self.int_type)
            feed = {"input_ids": token, "encoder_attention_mask": mask, **cache}
            values = self.run("decoder_with_past", feed)
            yield "decoder_with_past", feed, values
            for name, value in values.items():  # the self-attention cache grows; cross-attention stays
                if name.startswith(_PRESENT):
                    cache[name.replace(_PRESENT, _PAST, 1)] = value

    def greedy(self, ids: np.ndarray, new_tokens: int) -> np.ndarray:
        """`new_tokens` tokens after the start token for each prompt row (batch, new_tokens)."""
        tokens = [
            self.next_token(values["logits"])
            for part, _feed, values in self.feeds(ids, new_tokens)
            if part != "encoder"
        ]
        return np.stack(tokens, axis=1)

    def recorded_feeds(self, ids: np.ndarray, new_tokens: int) -> Iterator[tuple[str, dict]]:
        """(part, feed) of a greedy generation: calibration data for each part, the cache inputs
        carrying real values, as they do when the model serves."""
        for part, feed, _values in self.feeds(ids, new_tokens):
            yield part, feed

    def timed(self, ids: np.ndarray, new_tokens: int) -> tuple[float, list[float]]:
        """Time to the first token (encoder and first decoder step) and of each further token, ms."""
        runs = self.feeds(ids, new_tokens)
        start = time.perf_counter()
        next(runs), next(runs)
        first = (time.perf_counter() - start) * 1000
        steps = []
        while True:
            start = time.perf_counter()
            if next(runs, None) is None:
                return first, steps
            steps.append((time.perf_counter() - start) * 1000)
