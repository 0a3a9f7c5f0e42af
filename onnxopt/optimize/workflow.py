"""The `optimize` workflow: transformer fusions and clean-up, checked for output parity."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from onnxopt.data.samples import TokenizedSamples, input_types, load_tokenizer, synthetic_inputs
from onnxopt.data.sources import embedded_samples
from onnxopt.errors import OnnxoptError
from onnxopt.evaluate.fidelity import Fidelity, output_fidelity
from onnxopt.evaluate.verify import verify_staged
from onnxopt.io import model_files, saving
from onnxopt.io.cache_layout import cache_layout
from onnxopt.io.model_info import ModelInfo
from onnxopt.io.outputs import claim_output
from onnxopt.io.rope import rope_tables
from onnxopt.optimize.config import OptimizeConfig
from onnxopt.options import config_from
from onnxopt.passes import Pipeline, StepReport
from onnxopt.passes.fuse_decoder_attention import FuseDecoderAttention
from onnxopt.passes.fuse_transformer import FuseTransformer
from onnxopt.passes.registry import check_skip, without
from onnxopt.runtime.sessions import check_loads

PARITY_SAMPLES = 8
OPTIMIZE_RULES = (FuseTransformer.name, FuseDecoderAttention.name)  # what --skip may name
Progress = Callable[[str, int, int], None]


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
    config: OptimizeConfig | None = None,
    overwrite: bool = False,
    on_progress: Progress | None = None,
    **options,
) -> OptimizeResult:
    config = config_from(OptimizeConfig, config, options)
    check_skip(config.skip, OPTIMIZE_RULES)
    progress = on_progress or (lambda _stage, _done, _total: None)
    start = time.perf_counter()
    ref = model_files.resolve(src)
    with claim_output(out, [ref.folder or ref.onnx_path], overwrite) as claim:
        model = model_files.load(ref)
        check_loads(ref.onnx_path)
        passes = [FuseTransformer(ModelInfo.read(ref).model_type)]
        if cache_layout(model) is not None:
            passes.append(FuseDecoderAttention(rope_tables(ref.folder)))
        passes = without(passes, config.skip)
        model, reports = Pipeline(passes).run(model, on_step=lambda name: progress(name, 0, 0))
        with claim.staged() as tmp:
            saving.save(model, tmp)
            model_files.copy_sidecars(ref.folder, tmp, model)
            progress("parity check", 0, 0)
            parity = output_fidelity(tmp, ref.folder or ref.onnx_path, _parity_inputs(ref, model))
            if not parity.max_abs_diff <= config.atol:
                raise OnnxoptError(
                    f"optimized outputs differ from the input model's by {parity.max_abs_diff:.2e}, "
                    f"above --atol {config.atol:g}",
                    "raise --atol if fused kernels' rounding is acceptable, or skip optimization",
                )
            manifest = ref.derived_manifest(model)
            fused = {op: n for r in reports for op, n in r.details.get("fused", {}).items()}
            manifest.add_step("optimize", fused=fused, parity=vars(parity), atol=config.atol)
            manifest.save(tmp)
            verified = verify_staged(config.verify_loading, tmp, ref.folder, out)
        return OptimizeResult(out, reports, parity, config.atol, time.perf_counter() - start, verified)


def _parity_inputs(ref, model):
    types = input_types(model)
    if ref.has_tokenizer():
        return TokenizedSamples(embedded_samples(PARITY_SAMPLES), load_tokenizer(ref.folder), types, 128)
    return [synthetic_inputs(model, 2, 16, seed=i) for i in range(PARITY_SAMPLES)]
