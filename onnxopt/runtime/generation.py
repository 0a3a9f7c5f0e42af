"""Generation through a decoder's KV cache with onnxruntime: a prefill of the prompt, then one
token at a time, each step feeding the previous step's `present.*` back as `past_key_values.*`.

optimum exports a decoder "with past" as one graph whose past inputs may be empty (past length
0): the prefill and every decode step run the same session. Everything that generates (export's
check against PyTorch, `bench --generate`, perplexity through the cache, greedy agreement, the
calibration of static int8 and GPTQ) goes through `Decoder`.

Where GroupQueryAttention writes the cache (onnxopt's fused decoders), greedy generation and its
timing bind each layer's past input and present output to one buffer sized for the whole
generation (`SharedCache`): the kernel then writes each new token's keys and values in place,
where a fresh present is otherwise a copy of the whole past plus one row, every layer, every
token. onnxruntime-genai serves GroupQueryAttention models this way. SmolLM2 int4, prompt 128 and
64 new tokens, AMD EPYC, 2 threads: 9.88 -> 8.21 ms a token, the same tokens.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator

import numpy as np

from onnxopt.errors import OnnxoptError, first_line
from onnxopt.io.cache_layout import CacheLayout, empty_past

# What onnxruntime's messages say when memory ran out (its arena, or a plain allocation).
_OUT_OF_MEMORY = ("bad_alloc", "bfc_arena", "Failed to allocate", "MemoryError")
_FAILED_HINT = (
    "its config.json or graph may not hold together (positions, layers, heads): check it with "
    "`onnxopt inspect`, or export it again"
)


class Decoder:
    """A with-past decoder session: prefill and decode steps, greedy generation, timing.

    `name` and `hint` go into the one-line error that replaces onnxruntime's when a step fails
    (a config that lies about the model gets this far only as a Gather index or shape error)."""

    def __init__(
        self, session, layout: CacheLayout, int_type=np.int64, name: str = "the model", hint: str = ""
    ):
        self.session, self.layout, self.int_type = session, layout, int_type
        self.name, self.hint = name, hint or _FAILED_HINT
        self.outputs = ["logits", *layout.present]
        # CPU provider only: another provider may hold the cache in its own memory, or copy it.
        providers = session.get_providers() if hasattr(session, "io_binding") else []
        self.shares_cache = layout.gqa_writes_presents and list(providers) == ["CPUExecutionProvider"]

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        return empty_past(self.layout, batch)

    def feed(self, ids: np.ndarray, past: dict[str, np.ndarray], past_length: int) -> dict[str, np.ndarray]:
        """The inputs of one step: `ids` (batch, n) after `past_length` cached tokens."""
        batch, n = ids.shape
        feed = {"input_ids": ids.astype(self.int_type), **past}
        if "attention_mask" in self.layout.inputs:
            feed["attention_mask"] = np.ones((batch, past_length + n), self.int_type)
        if "position_ids" in self.layout.inputs:
            positions = np.arange(past_length, past_length + n, dtype=self.int_type)
            feed["position_ids"] = np.broadcast_to(positions, (batch, n)).copy()
        return feed

    def run(self, feed: dict[str, np.ndarray], past_length: int, run=None) -> list:
        """session.run(outputs, feed), or `run()` (an io-bound run); a failure is one OnnxoptError
        naming the model, the batch and the length the generation had reached."""
        try:
            return run() if run is not None else self.session.run(self.outputs, feed)
        except OnnxoptError:
            raise
        except Exception as exc:
            batch, n = feed["input_ids"].shape
            where = f"batch {batch}, {past_length + n} tokens"
            hint = self.hint
            if isinstance(exc, MemoryError) or any(s in str(exc) for s in _OUT_OF_MEMORY):
                hint = "memory ran out: use a smaller --batch or shorter prompts and fewer new tokens"
            raise OnnxoptError(
                f"onnxruntime failed generating with {self.name} ({where}): {first_line(exc, 160)}", hint
            ) from exc

    def step(self, ids: np.ndarray, past: dict, past_length: int, seen=None) -> tuple[np.ndarray, dict]:
        """Logits of the last position, and the cache after these tokens; `seen(feed)`, given,
        receives the feed before it runs."""
        feed = self.feed(ids, past, past_length)
        if seen is not None:
            seen(feed)
        values = self.run(feed, past_length)
        cache = dict(zip(self.layout.past, values[1:], strict=True))
        return values[0][:, -1, :], cache

    def greedy(self, prompt: np.ndarray, new_tokens: int) -> np.ndarray:
        """`new_tokens` tokens after each prompt row, always the most likely one (batch, new_tokens)."""
        run = self.runner(len(prompt), prompt.shape[1] + new_tokens)
        return np.stack(list(self._greedy_steps(prompt, new_tokens, run)), axis=1)

    def runner(self, batch: int, capacity: int, seen=None):
        """A function (ids, past_length) -> last logits that keeps the cache between calls, for
        one generation of at most `capacity` tokens in all. With `seen` (which receives every
        feed) the cache is always the presents copied back: a shared buffer has no feed to record."""
        if self.shares_cache and seen is None:
            return SharedCache(self, batch, capacity)
        past = self.empty_past(batch)

        def run(ids: np.ndarray, past_length: int) -> np.ndarray:
            nonlocal past
            logits, past = self.step(ids, past, past_length, seen)
            return logits

        return run

    def _greedy_steps(self, prompt: np.ndarray, new_tokens: int, run) -> Iterator[np.ndarray]:
        """The one generation loop: the prefill, then each token (batch,), the most likely, fed
        back through `run` (a runner) when the next one is asked for. Greedy generation,
        calibration's recorded feeds and the timing all run it, so they generate alike."""
        logits = run(prompt, 0)
        length = prompt.shape[1]
        for _ in range(new_tokens):
            token = logits.argmax(-1)
            yield token
            logits = run(token[:, None], length)
            length += 1

    def recorded_feeds(self, prompt: np.ndarray, new_tokens: int) -> list[dict[str, np.ndarray]]:
        """Every feed a greedy generation gives the session, prefill first (new_tokens + 1):
        calibration data in which the cache inputs carry real values, as they do when the model
        serves."""
        feeds = []
        run = self.runner(len(prompt), prompt.shape[1] + new_tokens, seen=feeds.append)
        collections.deque(self._greedy_steps(prompt, new_tokens, run), maxlen=0)
        return feeds

    def timed(self, prompt: np.ndarray, new_tokens: int) -> tuple[float, list[float]]:
        """Time to the first token (the prefill, the cache's allocation included) and the time of
        each further token, in ms; the last token's step, which a server would not run, is not."""
        start = time.perf_counter()
        run, stamps = self.runner(len(prompt), prompt.shape[1] + new_tokens), []

        def clocked(ids: np.ndarray, past_length: int) -> np.ndarray:
            stamps.append(time.perf_counter())
            logits = run(ids, past_length)
            stamps.append(time.perf_counter())
            return logits

        tokens = self._greedy_steps(prompt, new_tokens, clocked)
        for _ in range(max(new_tokens, 1)):  # the prefill runs even for none; no step past the last
            next(tokens, None)
        first = (stamps[1] - start) * 1000
        return first, [(end - begin) * 1000 for begin, end in zip(stamps[2::2], stamps[3::2], strict=True)]

    def token_log_likelihoods(self, ids: np.ndarray, chunk: int, context: int) -> np.ndarray:
        """log p(token_i | tokens before it) for i >= 1 of one sequence, read `chunk` tokens at a time
        through the cache (what generation sees), the cache restarting past `context` tokens."""
        found = []
        past, length = self.empty_past(1), 0
        for start in range(0, len(ids) - 1, chunk):
            piece = ids[start : start + chunk + 1]
            if length + len(piece) - 1 > context:
                past, length = self.empty_past(1), 0
            values = self.run(self.feed(piece[None, :-1], past, length), length)
            past = dict(zip(self.layout.past, values[1:], strict=True))
            length += len(piece) - 1
            found.append(target_log_probs(values[0][0], piece[1:]))
        return np.concatenate(found) if found else np.zeros(0)


def target_log_probs(logits: np.ndarray, targets: np.ndarray, rows: int = 16) -> np.ndarray:
    """log softmax(logits)[i, targets[i]], in float64 a few rows at a time: the whole window's
    log-softmax in float64 took three window x vocabulary buffers (0.5B shape, vocabulary 49,152:
    eval's peak RSS 0.76 GiB, one buffer in place 0.71, 16 rows at a time 0.64)."""
    found = np.empty(len(targets))
    for first in range(0, len(targets), rows):
        part = logits[first : first + rows].astype(np.float64)
        part -= part.max(1, keepdims=True)
        chosen = part[np.arange(len(part)), targets[first : first + rows]]
        np.exp(part, out=part)
        found[first : first + rows] = chosen - np.log(part.sum(1))
    return found


class SharedCache:
    """One buffer per cache tensor, (batch, KV heads, capacity, head dim), bound as both the past
    input and the present output, so GroupQueryAttention appends to it in place (the kernel's
    share-buffer mode: it sees the same pointer on both sides). The attention mask says how many
    positions hold tokens; the prefill writes straight into the buffers too."""

    def __init__(self, decoder: Decoder, batch: int, capacity: int):
        import onnxruntime as ort

        layout = decoder.layout
        self.decoder, self.binding, self.capacity = decoder, decoder.session.io_binding(), capacity
        self.binding.bind_output("logits")  # bound first: get_outputs()[0] from here on
        self.buffers = []  # what the cache holds, readable after a run
        for past, present in zip(layout.past, layout.present, strict=True):
            shape = (batch, layout.heads[past], capacity, layout.head_dim[past])
            buffer = ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, layout.dtype))
            self.binding.bind_ortvalue_input(past, buffer)
            self.binding.bind_ortvalue_output(present, buffer)
            self.buffers.append(buffer)

    def __call__(self, ids: np.ndarray, past_length: int) -> np.ndarray:
        if past_length + ids.shape[1] > self.capacity:
            raise OnnxoptError(
                f"the cache holds {self.capacity} tokens, this step would make {past_length + ids.shape[1]}",
                "size the runner for the prompt plus every new token",
            )
        feed = self.decoder.feed(ids, {}, past_length)
        for name, value in feed.items():
            self.binding.bind_cpu_input(name, value)
        self.binding.bind_output("logits")  # its shape changes after the prefill: a new one each run
        self.decoder.run(feed, past_length, lambda: self.decoder.session.run_with_iobinding(self.binding))
        # The raw vector: get_outputs() would wrap every output, the whole cache included, each step.
        return self.binding.get_outputs_as_ortvaluevector()[0].numpy()[:, -1, :]
