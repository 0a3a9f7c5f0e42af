"""The graph rewrite and fusion passes by name, in one place (as OnnxSlim names its patterns), so
a user can leave one out: `onnxopt optimize --skip NAME`. The name is the pass's own `name`, the
one its step report shows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from onnxopt.errors import OnnxoptError
from onnxopt.passes.base import Pass
from onnxopt.passes.cpu_int8_layout import CpuInt8Layout
from onnxopt.passes.fold_weight_transposes import FoldWeightTransposes
from onnxopt.passes.fuse_decoder_attention import FuseDecoderAttention
from onnxopt.passes.fuse_rms_norm import FuseRmsNorm
from onnxopt.passes.fuse_transformer import FuseTransformer
from onnxopt.passes.pack_projections import PackProjections
from onnxopt.passes.qdq_fp32_readers import QdqFp32Readers
from onnxopt.passes.quantize_embeddings import QuantizeEmbeddings

RULES: dict[str, type[Pass]] = {
    rule.name: rule
    for rule in (
        FuseTransformer,
        FuseDecoderAttention,
        FuseRmsNorm,
        FoldWeightTransposes,
        PackProjections,
        QuantizeEmbeddings,
        QdqFp32Readers,
        CpuInt8Layout,
    )
}


def check_skip(skip: Iterable[str], among: Sequence[str] = tuple(RULES)) -> None:
    """Refuse a name in `skip` that is not one of the rules `among` (those a workflow runs), before
    any work, listing the names it knows."""
    unknown = [name for name in skip if name not in among]
    if unknown:
        raise OnnxoptError(f"--skip names no rule: {', '.join(unknown)}", f"the rules are {', '.join(among)}")


def without(passes: Sequence[Pass], skip: Iterable[str]) -> list[Pass]:
    """`passes` less those named in `skip`."""
    skipped = set(skip)
    return [p for p in passes if p.name not in skipped]
