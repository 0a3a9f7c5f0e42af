"""Peak resident memory of serving one decoder: a fresh process loads it, generates once, and
reports its high-water mark (VmHWM).

Measured in a process of its own because in the bench's process the models share one heap: a
session made after another model was freed reuses that memory, so its measured growth can read
near zero (SmolLM2 int8 showed "1 MB" that way). The figure includes Python and onnxruntime
themselves (about 100 MB), as a serving process would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from onnxopt.runtime.sessions import SessionSettings


def peak_rss_mb(
    model: Path, settings: SessionSettings, prompt: np.ndarray, new_tokens: int, runtime: str = "onnxopt"
) -> float:
    """The high-water mark of a process that makes the session(s) and generates `new_tokens` once:
    `model` is a decoder's .onnx file, or the folder of an encoder-decoder in parts (or of the
    decoder onnxruntime-genai serves, with runtime "genai")."""
    job = {
        "runtime": runtime,
        "path": str(model),
        "settings": asdict(settings),
        "shape": list(prompt.shape),
        "high": int(prompt.max()) + 1,
        "new_tokens": new_tokens,
    }
    done = subprocess.run(
        [sys.executable, "-m", "onnxopt.runtime.peak_memory"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        return float("nan")  # measured where it can be; the timings stand without it
    return float(done.stdout.strip().splitlines()[-1])


def _high_water_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _main() -> None:
    import onnx

    from onnxopt.io.cache_layout import cache_layout
    from onnxopt.runtime.generation import Decoder
    from onnxopt.runtime.sessions import make_session

    job = json.loads(sys.stdin.read())
    path, settings = Path(job["path"]), SessionSettings(**job["settings"])
    if job.get("runtime") == "genai":
        from onnxopt.io.model_files import resolve
        from onnxopt.runtime.genai_bench import GenaiDecoder

        runner = GenaiDecoder.load(resolve(path), settings)
    elif path.is_dir():
        from onnxopt.runtime.seq2seq import Seq2Seq

        runner = Seq2Seq.load(path, settings)
    else:
        layout = cache_layout(onnx.load(str(path), load_external_data=False))
        runner = Decoder(make_session(path, settings=settings), layout)
    prompt = np.random.default_rng(0).integers(0, job["high"], size=tuple(job["shape"]))
    runner.timed(prompt, job["new_tokens"])
    print(f"{_high_water_mb():.1f}")


if __name__ == "__main__":
    _main()
