"""`quantize --target auto`: both int8 layouts built from the same calibration, each timed on every
provider available here, interleaved (runtime/measure, as `bench --ep all`), the faster kept and the
provider it was fastest on recorded as the model's runtime choice.

Why both are built rather than guessed: which layout wins depends on the CPU and the engine. MiniLM,
batch 1 / 32, seq 128 (2026-12-02): on an Intel Xeon with AVX512-VNNI the CPU-provider layout on
onnxruntime ran 7.3 / 254 ms against the OpenVINO layout on OpenVINO 11.8 / 206 ms, a win each way
by batch; on an AMD EPYC with VNNI the CPU layout won both (14.8 vs 9.2 ms at batch 1).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from onnxopt.errors import OnnxoptError
from onnxopt.io import model_files
from onnxopt.io.manifest import Manifest
from onnxopt.io.outputs import claim_output
from onnxopt.quantize.config import QuantizeConfig
from onnxopt.quantize.plan import ENCODER, model_kind
from onnxopt.runtime import selection
from onnxopt.runtime.measure import bench
from onnxopt.runtime.providers import available

# The layouts compared, each with the provider it is laid out for (it is timed on every one).
LAYOUTS = ("cpu", "openvino")
# Timed where encoders serve: one request, and a full batch. The choice is the geometric mean of the
# two p50 ratios, so neither batch size decides alone.
BATCHES = (1, 32)
TIMED_RUNS = 10
MIN_SECONDS = 1.0


@dataclass
class LayoutTiming:
    layout: str
    provider: str  # the provider this layout was fastest on
    p50_ms: dict[int, float]  # batch -> p50 on that provider
    settings: dict


@dataclass
class TargetChoice:
    chosen: str
    provider: str
    layouts: list[LayoutTiming]
    why: str

    def as_record(self) -> dict:
        return {
            "chosen": self.chosen,
            "provider": self.provider,
            "why": self.why,
            "p50_ms": {t.layout: {t.provider: t.p50_ms} for t in self.layouts},
        }


def check_auto(src: Path) -> None:
    """Refuse what auto does not time: decoders (their layouts are timed by `bench --generate`)."""
    if model_kind(src) != ENCODER:
        raise OnnxoptError(
            "--target auto times encoder layouts; this model is a generative one",
            "use --target cpu (the default) and compare with `onnxopt bench --generate`",
        )


def quantize_auto(src: Path, out: Path, config: QuantizeConfig, overwrite: bool, progress, build: Callable):
    """Build each layout into OUT's staging folder (`build(layout, folder)`: the run with that
    layout's plan; the options stay as given), time them, keep the faster as OUT."""
    check_auto(src)
    start = time.perf_counter()
    ref = model_files.resolve(src)
    with claim_output(out, [ref.folder or ref.onnx_path], overwrite) as claim, claim.staged() as tmp:
        results = {}
        for layout in LAYOUTS:
            progress(f"target {layout}", 0, 0)
            results[layout] = build(layout, tmp / layout)
        progress("timing layouts", 0, 0)
        choice = choose(
            [model_files.resolve(tmp / layout) for layout in LAYOUTS],
            config.seq_len,
            lambda done, total: progress("timing layouts", done, total),
        )
        _keep(tmp, choice)
        result = results[choice.chosen]
        result.out, result.seconds = out, time.perf_counter() - start
        result.options = {**result.options, "target": "auto", "target_choice": choice.as_record()}
    return result, choice


def _keep(tmp: Path, choice: TargetChoice) -> None:
    """Move the chosen layout's files up into the staging folder, record the choice, drop the rest."""
    chosen = tmp / choice.chosen
    for path in chosen.iterdir():
        path.rename(tmp / path.name)
    for layout in LAYOUTS:
        shutil.rmtree(tmp / layout)
    manifest = Manifest.load(tmp)
    manifest.add_step("target-auto", **choice.as_record())
    fastest = next(t for t in choice.layouts if t.layout == choice.chosen)
    manifest.runtime["selected"] = fastest.settings
    manifest.save(tmp)


def choose(refs: list, seq: int, on_progress=None) -> TargetChoice:
    """Each layout's best provider by p50 (outputs that drift from the CPU provider's are not
    eligible), then the layout with the lower geometric mean over BATCHES."""
    providers = [p for p in ("cpu", "openvino") if available(p)[0]]
    report = bench(
        refs,
        BATCHES,
        seq,
        runs=TIMED_RUNS,
        warmup=2,
        providers=providers,
        min_seconds=MIN_SECONDS,
        on_progress=on_progress,
    )
    # Every pair drifting is no reason to stop: then the drift check decides nothing.
    timings = [t for t in report.timings if not selection.drifts(t)] or report.timings
    layouts = [_best(layout, ref.name, timings) for layout, ref in zip(LAYOUTS, refs, strict=True)]
    layouts = [t for t in layouts if t is not None]
    base = layouts[0]

    def ratio(t: LayoutTiming) -> float:
        return math.exp(sum(math.log(t.p50_ms[b] / base.p50_ms[b]) for b in BATCHES) / len(BATCHES))

    best = min(layouts, key=ratio)
    figures = "; ".join(
        f"{t.layout} layout on {t.provider}: " + ", ".join(f"b{b} {t.p50_ms[b]:.1f} ms" for b in BATCHES)
        for t in layouts
    )
    missing = (
        "" if "openvino" in providers else " (OpenVINO unavailable here: " + available("openvino")[1] + ")"
    )
    return TargetChoice(best.layout, best.provider, layouts, figures + missing)


def _best(layout: str, model: str, timings: list) -> LayoutTiming | None:
    rows = [t for t in timings if t.model == model]
    by_provider: dict[str, dict[int, float]] = {}
    for t in rows:
        by_provider.setdefault(t.provider, {})[t.batch] = t.p50_ms
    complete = {p: ms for p, ms in by_provider.items() if all(b in ms for b in BATCHES)}
    if not complete:
        return None
    provider = min(complete, key=lambda p: math.prod(complete[p].values()))
    settings = next(t.settings for t in rows if t.provider == provider)
    return LayoutTiming(layout, provider, complete[provider], settings)
