"""`bench --generate --runtime genai`: a decoder folder timed through onnxruntime-genai's own
generation loop (`onnxruntime_genai.Model(folder)`, reading the genai_config.json onnxopt writes
beside every decoder: io/genai_config), for the figures a genai deployment would see.

The same measurements as onnxopt's loop (runtime.generation.Decoder.timed): genai's append_tokens
runs the prefill and its first generate_next_token only picks the token, so the first token is
the two together; every further generate_next_token runs one decode step and picks its token,
`new_tokens - 1` of them, as many decode steps as onnxopt's loop times. min_length equals
max_length so a random prompt that reaches <eos> still generates every token.

Session settings: genai makes its own sessions from genai_config.json's session_options; the
bench's threads and graph optimization level are overlaid on the config in memory (og.Config's
overlay), so the user's file is not edited.

SmolLM2-135M, prompt 128, 64 new tokens, batch 1, --threads 2, AMD EPYC (2 vCPUs under a load of
about 7), runtimes alternated twice: per token p50 fp32 120/124 ms genai, 122/133 ms onnxopt; int4
39.5/38.7 ms genai, 36.1/36.0 ms onnxopt; peak RSS int4 about 300 MB genai, 355 MB onnxopt.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from onnxopt.errors import OnnxoptError, cut, first_line
from onnxopt.io.genai_config import GENAI_CONFIG
from onnxopt.io.model_files import ModelRef
from onnxopt.runtime.sessions import SessionSettings

_OPT_LEVELS = {  # SessionSettings.opt_level -> genai's session_options value
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def genai_module():
    try:
        import onnxruntime_genai
    except ImportError as exc:
        raise OnnxoptError(
            "--runtime genai needs onnxruntime-genai, which is not installed",
            "pip install 'onnxopt[genai]'",
        ) from exc
    return onnxruntime_genai


def genai_folder(ref: ModelRef) -> Path:
    """The folder genai serves: the model's, with its genai_config.json."""
    if ref.folder is None or not (ref.folder / GENAI_CONFIG).is_file():
        raise OnnxoptError(
            f"{cut(ref.name)} has no {GENAI_CONFIG}, which --runtime genai reads",
            "export or quantize it again with this onnxopt, which writes one beside every decoder",
        )
    return ref.folder


def genai_settings(settings: SessionSettings) -> SessionSettings:
    """What genai is told of `settings`: threads and optimization level. The execution mode stays
    genai's sequential and provider options are OpenVINO's, so neither is carried (nor reported)."""
    return SessionSettings(
        settings.provider, settings.intra_threads, settings.inter_threads, settings.opt_level
    )


def session_options(settings: SessionSettings) -> dict:
    options = {"graph_optimization_level": _OPT_LEVELS[settings.opt_level]}
    if settings.intra_threads:
        options["intra_op_num_threads"] = settings.intra_threads
    if settings.inter_threads:
        options["inter_op_num_threads"] = settings.inter_threads
    return options


class GenaiDecoder:
    """A genai Model with the runner interface of runtime.generation.Decoder for timing."""

    def __init__(self, og, model, name: str, shares_cache: bool):
        self.og, self.model, self.name, self.shares_cache = og, model, name, shares_cache

    @classmethod
    def load(cls, ref: ModelRef, settings: SessionSettings) -> GenaiDecoder:
        folder = genai_folder(ref)
        og = genai_module()
        search = json.loads((folder / GENAI_CONFIG).read_text(encoding="utf-8")).get("search", {})
        try:
            config = og.Config(str(folder))
            overlay = {"model": {"decoder": {"session_options": session_options(settings)}}}
            config.overlay(json.dumps(overlay))
            model = og.Model(config)
        except Exception as exc:
            raise OnnxoptError(
                f"onnxruntime-genai could not load {cut(ref.name)}: {first_line(exc, 160)}",
                f"write its {GENAI_CONFIG} again: export or quantize it again with this onnxopt",
            ) from exc
        return cls(og, model, ref.name, bool(search.get("past_present_share_buffer")))

    def timed(self, prompt: np.ndarray, new_tokens: int) -> tuple[float, list[float]]:
        """Time to the first token (the prefill) and the time of each further token, in ms."""
        batch, length = prompt.shape
        try:
            start = time.perf_counter()
            params = self.og.GeneratorParams(self.model)
            total = length + new_tokens
            params.set_search_options(max_length=total, min_length=total, batch_size=batch)
            generator = self.og.Generator(self.model, params)
            generator.append_tokens(prompt.astype(np.int32))
            generator.generate_next_token()
            first = (time.perf_counter() - start) * 1000
            steps = []
            for _ in range(new_tokens - 1):
                start = time.perf_counter()
                generator.generate_next_token()
                steps.append((time.perf_counter() - start) * 1000)
            made = len(generator.get_sequence(0))
        except Exception as exc:
            raise OnnxoptError(
                f"onnxruntime-genai failed generating with {cut(self.name)} (batch {batch}, "
                f"prompt {length}): {first_line(exc, 160)}",
                "use a smaller --batch or shorter prompts, or bench it with --runtime onnxopt",
            ) from exc
        if made != total:  # min_length should rule it out: figures of a shorter run would mislead
            raise OnnxoptError(
                f"onnxruntime-genai stopped {cut(self.name)} at {made} of {total} tokens",
                "bench it with --runtime onnxopt",
            )
        return first, steps
