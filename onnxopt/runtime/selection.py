"""Choosing each model's execution provider by measurement, and remembering how to run it.

The choice and any tuned settings live in the model's manifest (`runtime`), so later `bench` and
`eval` runs use the same provider and session options without being told again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from onnxopt.errors import OnnxoptError
from onnxopt.io.manifest import MANIFEST_NAME
from onnxopt.io.model_files import ModelRef
from onnxopt.runtime.sessions import SessionSettings

# A provider whose outputs drift further than this from the CPU provider's (cosine, worst sample)
# is not picked, however fast: speed bought with broken outputs is not a win. Set to catch
# breakage, not rounding: static int8 MiniLM on OpenVINO drifted to cosine 0.9936 from the CPU
# provider's outputs, yet scored STS-B dev 86.74 against 86.71 on CPU.
MIN_COSINE = 0.99


@dataclass
class Selection:
    model: str
    provider: str
    batch: int
    p50_ms: float
    settings: dict
    passed_over: dict[str, str] = field(default_factory=dict)  # provider -> why it was not eligible
    recorded: bool = False


def drifts(t) -> bool:
    """Whether a timing's outputs drifted from the CPU provider's beyond MIN_COSINE."""
    return t.min_cosine_vs_cpu is not None and t.min_cosine_vs_cpu < MIN_COSINE


def _eligible(t, passed_over: dict[str, str]) -> bool:
    if drifts(t):
        passed_over[t.provider] = (
            f"outputs drift from CPU's (cosine {t.min_cosine_vs_cpu:.5f} < {MIN_COSINE})"
        )
        return False
    return True


def select(timings: Sequence) -> dict[str, Selection]:
    """Per model, the fastest eligible provider by p50 at the smallest batch measured."""
    chosen: dict[str, Selection] = {}
    for model in dict.fromkeys(t.model for t in timings):
        rows = [t for t in timings if t.model == model]
        smallest = min(t.batch for t in rows)
        passed_over: dict[str, str] = {}
        eligible = [t for t in rows if t.batch == smallest and _eligible(t, passed_over)]
        if not eligible:  # every provider drifted: fall back to the CPU rows, the reference
            eligible = [t for t in rows if t.batch == smallest and t.provider == "cpu"] or rows
        best = min(eligible, key=lambda t: t.p50_ms)
        chosen[model] = Selection(model, best.provider, smallest, best.p50_ms, best.settings, passed_over)
    return chosen


def _runtime(ref: ModelRef) -> dict:
    manifest = ref.manifest
    return manifest.runtime if manifest is not None else {}


def record(ref: ModelRef, selection: Selection) -> bool:
    """Write the choice into the model's manifest; False when the model has no folder/manifest."""
    manifest = ref.manifest
    if manifest is None:
        return False
    manifest.runtime["selected"] = selection.settings
    manifest.add_step(
        "select-provider",
        provider=selection.provider,
        batch=selection.batch,
        p50_ms=round(selection.p50_ms, 3),
        settings=selection.settings,
        passed_over=selection.passed_over,
    )
    manifest.save(ref.folder)
    selection.recorded = True
    return True


def record_tuned(ref: ModelRef, best: dict[str, SessionSettings]) -> bool:
    manifest = ref.manifest
    if manifest is None:
        return False
    tuned = dict(manifest.runtime.get("tuned", {}))
    tuned.update({provider: s.as_dict() for provider, s in best.items()})
    manifest.runtime["tuned"] = tuned
    manifest.add_step("tune", best={provider: s.describe() for provider, s in best.items()})
    manifest.save(ref.folder)
    return True


def saved_settings(ref: ModelRef, provider: str, threads: int | None = None) -> SessionSettings:
    """Settings for running `ref` on `provider`: the tuned ones from its manifest if any, else the
    defaults. An explicit `threads` wins over what was saved."""
    runtime = _runtime(ref)
    saved = runtime.get("tuned", {}).get(provider)
    if saved is None and runtime.get("selected", {}).get("provider") == provider:
        saved = runtime["selected"]
    try:
        settings = SessionSettings.from_dict(saved) if saved else SessionSettings(provider=provider)
    except (OnnxoptError, TypeError, ValueError) as exc:
        raise OnnxoptError(
            f"the saved session settings in {ref.folder / MANIFEST_NAME} are invalid: "
            f"{getattr(exc, 'message', exc)}",
            'run `onnxopt bench --tune` again, or delete its "runtime" entry',
        ) from exc
    if threads:
        settings = replace(settings, intra_threads=threads)
    return settings


def runtime_settings(ref: ModelRef, threads: int | None = None) -> SessionSettings:
    """How to run `ref` for evaluation: its selected provider and settings, if it has any and the
    provider is available here; else the CPU provider."""
    from onnxopt.runtime.providers import available

    selected = _runtime(ref).get("selected")
    if selected and available(selected.get("provider", "cpu"))[0]:
        return saved_settings(ref, selected["provider"], threads)
    return SessionSettings(provider="cpu", intra_threads=threads)
