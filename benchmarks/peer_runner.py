"""One candidate of benchmarks/generate_peers.py measured in its own runtime, by the Python of the venv
that runtime lives in (numpy and the runtime's package only: no onnxopt import unless the backend is
onnxopt's or onnxruntime-genai's, which run from .venv):

    PYTHON benchmarks/peer_runner.py JOB.json OUT.json

JOB: {"backend": "onnxopt" | "genai" | "llama" | "openvino", "model": path, "threads": 2,
      "mode": "accuracy" | "serve" | "quantize", ...}

- accuracy: perplexity over the given windows of token ids (each window a prefill of its own, the
  logits of every position scored against the next id: `onnxopt eval --task perplexity`'s windows),
  and greedy continuations of the given prompts, as token ids: at most `new_tokens`, cut before the
  first end-of-text id (`eos`), each runtime stopping there as it does by itself (genai and OpenVINO
  GenAI mask end-of-text while a minimum length is unmet, so none is set here; llama.cpp and
  onnxopt's loop run on and are cut).
- serve: load, one warm-up generation, then `generations` timed ones of `new_tokens` after the
  `prompt` ids: time to the first token (prefill + first token, ms) and the time of every further
  token (ms); then the process's peak resident memory (VmHWM), the load included.
- quantize (llama only): llama_model_quantize of a GGUF file to the given type.
The ids are fed as ids everywhere: no runtime tokenizes anything, so all read the same tokens.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def log_likelihood(logits: np.ndarray, targets: np.ndarray) -> float:
    """Sum of log p(target) over the rows of `logits` (n, vocab), in float64."""
    logits = logits.astype(np.float64)
    logits -= logits.max(1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return float(log_probs[np.arange(len(targets)), targets].sum())


def cut(tokens, eos: list[int]) -> list[int]:
    """The tokens before the first end-of-text id."""
    out = []
    for token in tokens:
        if int(token) in eos:
            break
        out.append(int(token))
    return out


def high_water_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- onnxopt's own loop (.venv) ----------------------------------------------------------------


class Onnxopt:
    def __init__(self, job: dict):
        from onnxopt.runtime.sessions import SessionSettings

        self.folder = Path(job["model"])
        self.settings = SessionSettings(intra_threads=job["threads"])
        self._decoder = None

    @property
    def decoder(self):
        """Made as `onnxopt bench --generate`'s serving process makes it (runtime/peak_memory): the
        graph read for its cache layout and freed, then the session; evaluate's decoder_of keeps
        the whole ModelProto (weights and all) alive beside the session, ~500 MB more for int4."""
        if self._decoder is None:
            import onnx

            from onnxopt.io.cache_layout import cache_layout
            from onnxopt.runtime.generation import Decoder
            from onnxopt.runtime.sessions import make_session

            path = self.folder / "model.onnx"
            layout = cache_layout(onnx.load(str(path), load_external_data=False))
            self._decoder = Decoder(make_session(path, settings=self.settings), layout)
        return self._decoder

    def window_logits(self, ids: np.ndarray) -> np.ndarray:
        """As `onnxopt eval --task perplexity` scores a window (evaluate/perplexity.py)."""
        from onnxopt.evaluate.task_metrics import head_runner, run_head

        if not hasattr(self, "_head"):
            self._head = head_runner(self.folder, "logits", None, self.settings)
        return run_head(self._head, {"input_ids": ids[None, :]}, ["logits"])[0][0]

    def greedy(self, ids: np.ndarray, new_tokens: int) -> list[int]:
        return self.decoder.greedy(ids[None, :], new_tokens)[0].tolist()

    def timed(self, ids: np.ndarray, new_tokens: int) -> tuple[float, list[float]]:
        return self.decoder.timed(ids[None, :], new_tokens)


# --- onnxruntime-genai (.venv) ------------------------------------------------------------------


class Genai:
    """onnxruntime_genai.Model on the folder's genai_config.json, threads overlaid in memory (onnxopt's
    GenaiDecoder does the timing: append_tokens + first generate_next_token, then one per token)."""

    def __init__(self, job: dict):
        import onnxruntime_genai as og

        from onnxopt.io import model_files
        from onnxopt.runtime.genai_bench import GenaiDecoder
        from onnxopt.runtime.sessions import SessionSettings

        self.og = og
        ref = model_files.resolve(Path(job["model"]))
        self.decoder = GenaiDecoder.load(ref, SessionSettings(intra_threads=job["threads"]))
        self.model = self.decoder.model

    def window_logits(self, ids: np.ndarray) -> np.ndarray:
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(ids) + 1)
        generator = self.og.Generator(self.model, params)
        generator.append_tokens(ids[None, :].astype(np.int32))
        logits = np.asarray(generator.get_output("logits"))[0]
        if logits.shape[0] != len(ids):
            raise RuntimeError(f"genai gave logits of shape {logits.shape} for {len(ids)} tokens")
        return logits

    def greedy(self, ids: np.ndarray, new_tokens: int) -> list[int]:
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=len(ids) + new_tokens)
        generator = self.og.Generator(self.model, params)
        generator.append_tokens(ids[None, :].astype(np.int32))
        while not generator.is_done():
            generator.generate_next_token()
        return [int(t) for t in generator.get_sequence(0)[len(ids) :]]

    def timed(self, ids: np.ndarray, new_tokens: int) -> tuple[float, list[float]]:
        return self.decoder.timed(ids[None, :], new_tokens)


# --- llama.cpp (build/llama-venv) ---------------------------------------------------------------


class Llama:
    """llama-cpp-python's Llama; greedy is argmax of the last logits (llama_get_logits_ith), the
    token fed back with eval, so no sampler chain runs in any loop."""

    def __init__(self, job: dict):
        import llama_cpp

        self.lib = llama_cpp
        self.path, self.threads = job["model"], job["threads"]
        self.llm = self._load(logits_all=job["mode"] == "accuracy")

    def _load(self, logits_all: bool):
        return self.lib.Llama(
            model_path=self.path,
            n_ctx=512,
            n_batch=512,
            n_ubatch=512,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            logits_all=logits_all,
            verbose=False,
        )

    def window_logits(self, ids: np.ndarray) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(ids.tolist())
        return np.array(self.llm.scores[: len(ids)])

    def _last(self) -> int:
        ptr = self.lib.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(self.llm.n_vocab(),)).argmax())

    def _steps(self, ids: np.ndarray, new_tokens: int, stamps: list[float] | None = None) -> list[int]:
        self.llm.reset()
        self.llm.eval(ids.tolist())
        out = [self._last()]
        if stamps is not None:
            stamps.append(time.perf_counter())
        for _ in range(new_tokens - 1):
            self.llm.eval([out[-1]])
            out.append(self._last())
            if stamps is not None:
                stamps.append(time.perf_counter())
        return out

    def greedy(self, ids: np.ndarray, new_tokens: int) -> list[int]:
        return self._steps(ids, new_tokens)

    def timed(self, ids: np.ndarray, new_tokens: int) -> tuple[float, list[float]]:
        stamps = [time.perf_counter()]
        self._steps(ids, new_tokens, stamps)
        times = np.diff(stamps) * 1000
        return float(times[0]), times[1:].tolist()


def llama_quantize(job: dict) -> dict:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{job['type']}")
    params.nthread = job["threads"]
    code = llama_cpp.llama_model_quantize(job["model"].encode(), job["out"].encode(), params)
    if code != 0:
        raise RuntimeError(f"llama_model_quantize returned {code}")
    return {"out": job["out"], "type": job["type"], "llama_cpp": llama_cpp.__version__}


# --- OpenVINO GenAI (build/openvino-venv) --------------------------------------------------------


class OpenVINO:
    """openvino_genai.LLMPipeline for generation (its perf metrics time it: TTFT and the durations
    of every further token); optimum-intel's OVModelForCausalLM, the same IR on the same OpenVINO
    runtime, for the per-position logits perplexity needs (LLMPipeline returns none)."""

    def __init__(self, job: dict):
        import openvino as ov
        import openvino_genai

        self.ov, self.genai, self.folder, self.threads = ov, openvino_genai, job["model"], job["threads"]
        self.config = {"INFERENCE_NUM_THREADS": self.threads}
        self._pipe = self._causal = None

    @property
    def pipe(self):
        if self._pipe is None:
            # The default pipeline caches prompt prefixes: the same timed prompt would skip its
            # prefill from the second generation on, which no other candidate does.
            scheduler = self.genai.SchedulerConfig()
            scheduler.enable_prefix_caching = False
            self._pipe = self.genai.LLMPipeline(self.folder, "CPU", scheduler_config=scheduler, **self.config)
        return self._pipe

    def window_logits(self, ids: np.ndarray) -> np.ndarray:
        if self._causal is None:
            from optimum.intel import OVModelForCausalLM

            self._causal = OVModelForCausalLM.from_pretrained(
                self.folder, ov_config={"INFERENCE_NUM_THREADS": str(self.threads)}, compile=True
            )
        import torch

        with torch.no_grad():
            ids_t = torch.from_numpy(ids[None, :].astype(np.int64))
            out = self._causal(input_ids=ids_t, attention_mask=torch.ones_like(ids_t))
        return out.logits[0].float().numpy()

    def _generate(self, ids: np.ndarray, new_tokens: int, all_tokens: bool = True):
        config = self.genai.GenerationConfig()
        config.max_new_tokens = new_tokens
        config.do_sample = False
        if all_tokens:  # timing: every token generated, end-of-text or not
            config.min_new_tokens = new_tokens
            config.ignore_eos = True
        tensor = self.ov.Tensor(ids[None, :].astype(np.int64))
        mask = self.ov.Tensor(np.ones((1, len(ids)), np.int64))
        return self.pipe.generate(self.genai.TokenizedInputs(tensor, mask), config)

    def greedy(self, ids: np.ndarray, new_tokens: int) -> list[int]:
        return [int(t) for t in self._generate(ids, new_tokens, all_tokens=False).tokens[0]]

    def timed(self, ids: np.ndarray, new_tokens: int) -> tuple[float, list[float]]:
        start = time.perf_counter()
        result = self._generate(ids, new_tokens)
        wall = (time.perf_counter() - start) * 1000
        raw = result.perf_metrics.raw_metrics
        # m_durations: the time of each token after the first (microseconds); TTFT is the first's.
        steps = [float(d) / 1000 for d in raw.m_durations]
        if len(steps) != new_tokens - 1 or len(result.tokens[0]) != new_tokens:
            made = len(result.tokens[0])
            raise RuntimeError(f"OpenVINO GenAI made {made} tokens, {len(steps)} durations")
        # The first token: the whole call less the later tokens' durations, so that everything
        # before the first token counts, as onnxopt's cache allocation does in its loop.
        return wall - sum(steps), steps


BACKENDS = {"onnxopt": Onnxopt, "genai": Genai, "llama": Llama, "openvino": OpenVINO}


def accuracy(runner, job: dict) -> dict:
    total = count = 0.0
    t0 = time.perf_counter()
    for window in job.get("windows", []):
        ids = np.asarray(window, np.int64)
        logits = runner.window_logits(ids[:-1])
        total -= log_likelihood(logits, ids[1:])
        count += len(ids) - 1
    found = {"perplexity": float(np.exp(total / count)) if count else None, "tokens_scored": int(count)}
    found["perplexity_s"] = round(time.perf_counter() - t0, 1)
    eos = job.get("eos", [])
    prompts = [np.asarray(p, np.int64) for p in job.get("prompts", [])]
    found["greedy"] = [cut(runner.greedy(p, job["new_tokens"]), eos) for p in prompts]
    return found


def serve(runner, job: dict) -> dict:
    prompt = np.asarray(job["prompt"], np.int64)
    start = time.perf_counter()
    runner.timed(prompt, job["new_tokens"])  # the warm-up generation (the load is before it)
    warm = time.perf_counter() - start
    first, steps = [], []
    for _ in range(job["generations"]):
        f, s = runner.timed(prompt, job["new_tokens"])
        first.append(f)
        steps += s
    return {"first_ms": first, "steps_ms": steps, "warm_s": warm, "peak_rss_mb": high_water_mb()}


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    if job["mode"] == "quantize":
        found = llama_quantize(job)
    else:
        start = time.perf_counter()
        runner = BACKENDS[job["backend"]](job)
        load_s = time.perf_counter() - start
        found = accuracy(runner, job) if job["mode"] == "accuracy" else serve(runner, job)
        found["load_s"] = round(load_s, 2)
    Path(sys.argv[2]).write_text(json.dumps(found))


if __name__ == "__main__":
    main()
