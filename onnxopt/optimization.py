"""The `optimize` workflow: transformer fusions and clean-up, checked for output parity."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import modelio
from .datasources import embedded_samples
from .errors import OnnxoptError
from .evaluate import Fidelity, output_fidelity
from .outputs import claim_output
from .passes import Pipeline, StepReport
from .passes.fuse_transformer import FuseTransformer
from .quantization import model_type_of
from .samples import TokenizedSamples, input_types, load_tokenizer, synthetic_inputs
from .sessions import check_loads
from .verify import verify_staged

PARITY_SAMPLES = 8


@dataclass
class OptimizeResult:
    out: Path
    steps: list[StepReport]
    parity: Fidelity
    atol: float
    seconds: float
    verified: object = None  # VerifyResult, when --verify-loading ran (in the staged folder)


def optimize(
    src: Path,
    out: Path,
    atol: float = 1e-3,
    overwrite: bool = False,
    on_progress: Callable[[str, int, int], None] | None = None,
    verify_loading: bool = False,
) -> OptimizeResult:
    progress = on_progress or (lambda _stage, _done, _total: None)
    start = time.perf_counter()
    ref = modelio.resolve(src)
    with claim_output(out, [ref.folder or ref.onnx_path], overwrite) as claim:
        model = modelio.load(ref)
        check_loads(ref.onnx_path)
        model, reports = Pipeline([FuseTransformer(model_type_of(ref.folder))]).run(
            model, on_step=lambda name: progress(name, 0, 0)
        )
        with claim.staged() as tmp:
            modelio.save(model, tmp)
            modelio.copy_sidecars(ref.folder, tmp)
            progress("parity check", 0, 0)
            parity = output_fidelity(tmp, ref.folder or ref.onnx_path, _parity_inputs(ref, model))
            if not parity.max_abs_diff <= atol:
                raise OnnxoptError(
                    f"optimized outputs differ from the input model's by {parity.max_abs_diff:.2e}, "
                    f"above --atol {atol:g}",
                    "raise --atol if fused kernels' rounding is acceptable, or skip optimization",
                )
            manifest = ref.derived_manifest(model)
            manifest.add_step(
                "optimize", fused=reports[0].details.get("fused", {}), parity=vars(parity), atol=atol
            )
            manifest.save(tmp)
            verified = verify_staged(verify_loading, tmp, ref.folder, out)
        return OptimizeResult(out, reports, parity, atol, time.perf_counter() - start, verified)


def _parity_inputs(ref, model):
    types = input_types(model)
    if ref.has_tokenizer():
        return TokenizedSamples(embedded_samples(PARITY_SAMPLES), load_tokenizer(ref.folder), types, 128)
    return [synthetic_inputs(model, 2, 16, seed=i) for i in range(PARITY_SAMPLES)]
