"""`onnxopt bench`'s options, written once: the command line and the recipe schema derive from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from onnxopt.choices import GENERATION_RUNTIMES, PROVIDER_SETS, PROVIDERS
from onnxopt.errors import OnnxoptError, shorten
from onnxopt.options import Options, option


@dataclass(frozen=True)
class BenchConfig(Options):
    batch: tuple[int, ...] = option((1, 32), "Batch sizes.", low=1, metavar="1,32")
    seq_len: int = option(128, "Sequence length.", low=1)
    ep: str = option(
        "cpu",
        "Execution providers: cpu, openvino, cuda (comma separated), all (every one; unavailable "
        "ones listed with the reason) or auto (as all, and the fastest is saved in each manifest).",
        metavar="EP",
    )
    tune: bool = option(False, "First search session settings per model and provider; the best are saved.")
    threads: int | None = option(None, "Intra-op threads (default: the provider's choice).", low=1)
    runs: int = option(20, "Timed runs per model, provider and batch size.", low=1)
    min_time: float = option(2.0, "Time each model for at least this many seconds per batch size.", low=0)
    warmup: int = option(2, "Untimed runs first.", low=0)
    generate: bool = option(
        False, "Time generation through the KV cache: first token, per token, tokens/s (decoders)."
    )
    prompt_len: int = option(128, "With --generate: prompt tokens.", low=1)
    new_tokens: int = option(64, "With --generate: tokens generated after each prompt.", low=2)
    runtime: str = option(
        "onnxopt",
        "With --generate: what runs the generation loop, onnxopt's own or onnxruntime-genai's "
        "(the folder's genai_config.json; CPU; extra genai).",
        choices=GENERATION_RUNTIMES,
    )
    plot: Path | None = option(
        None, "Draw latency (and accuracy) to this PNG.", recipe=False, metavar="FILE.png"
    )

    def check(self) -> None:
        self.providers  # noqa: B018 - parsed here so a bad --ep fails before any model is read
        if self.runtime == "genai" and not self.generate:
            raise OnnxoptError("--runtime genai times generation only", "add --generate")
        if self.runtime == "genai" and self.providers != ["cpu"]:
            # onnxruntime-genai's package (extra genai) is its CPU build: it requires the CPU onnxruntime.
            raise OnnxoptError("--runtime genai runs on the CPU provider only", "use --ep cpu")
        if self.plot is not None and self.plot.suffix.lower() != ".png":
            raise OnnxoptError(
                f"--plot writes a PNG file, got {shorten(self.plot.name)}", "e.g. --plot latency.png"
            )

    @property
    def providers(self) -> list[str]:
        """`cpu`, `cpu,openvino`, `all` or `auto` as provider short names (every one for all/auto)."""
        key = self.ep.strip().lower()
        if key in PROVIDER_SETS:
            return list(PROVIDERS)
        names = list(dict.fromkeys(p.strip() for p in key.split(",") if p.strip()))
        if not names:
            raise OnnxoptError("--ep needs at least one provider", "e.g. --ep cpu,openvino, or --ep all")
        unknown = [n for n in names if n not in PROVIDERS]
        if unknown:
            raise OnnxoptError(
                f"unknown execution provider {shorten(unknown[0])}",
                f"use one of: {', '.join(PROVIDERS)}, or {' / '.join(PROVIDER_SETS)}",
            )
        return names

    @property
    def select(self) -> bool:
        return self.ep.strip().lower() == "auto"
