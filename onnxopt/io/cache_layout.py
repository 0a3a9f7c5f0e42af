"""Where a decoder exported with past keeps its KV cache: the `past_key_values.*` inputs (batch,
KV heads, past length, head dim) and the `present.*` outputs that refill them.

optimum exports a decoder "with past" as one graph whose past inputs may be empty (past length
0), so a prefill-only feed (calibration, fidelity, timing without generation) gives it empty
past tensors, and generation (onnxopt.runtime.generation) feeds the presents back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from onnxopt.errors import OnnxoptError, cut

_NUMPY = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16}


@dataclass(frozen=True)
class CacheLayout:
    """Where a with-past decoder keeps its cache: past inputs and the present outputs that refill them."""

    past: tuple[str, ...]  # past_key_values.{layer}.key / .value, graph order
    present: tuple[str, ...]  # the matching outputs, same order
    heads: dict[str, int]  # past input -> KV heads
    head_dim: dict[str, int]
    dtype: type
    inputs: tuple[str, ...]  # every graph input (input_ids, attention_mask, position_ids, past...)
    # Every present is written by a GroupQueryAttention reading the matching past: past and present
    # may then be one buffer, which the kernel extends in place (runtime.generation.SharedCache).
    gqa_writes_presents: bool = False

    @property
    def layers(self) -> int:
        return len(self.past) // 2


def cache_layout(model: onnx.ModelProto) -> CacheLayout | None:
    """The KV-cache layout of a decoder exported with past, or None for a model without a cache."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    past = [i for i in inputs if i.name.startswith("past_key_values.")]
    if not past:
        return None
    outputs = {o.name for o in model.graph.output}
    present = [i.name.replace("past_key_values.", "present.", 1) for i in past]
    missing = [p for p in present if p not in outputs]
    if missing:
        raise OnnxoptError(
            f"the model has cache inputs but no output {missing[0]!r} to refill them",
            "export it with optimum's `-with-past` task (the default for decoders)",
        )
    heads, head_dim = {}, {}
    for value in past:
        dims = value.type.tensor_type.shape.dim  # [batch, kv_heads, past_length, head_dim]
        if len(dims) != 4:  # Bloom-style (batch x heads, ...) caches, or a damaged graph
            raise OnnxoptError(
                f"cache input {cut(value.name)} has {len(dims)} dims, not 4 "
                "(batch, KV heads, past length, head dim)",
                "onnxopt generates through optimum's 4-dim caches; export it again with `onnxopt export`",
            )
        heads[value.name], head_dim[value.name] = dims[1].dim_value or 1, dims[3].dim_value or 1
    dtype = _NUMPY.get(past[0].type.tensor_type.elem_type, np.float32)
    names = tuple(i.name for i in inputs)
    pairs = dict(zip(present, (p.name for p in past), strict=True))
    return CacheLayout(
        tuple(p.name for p in past), tuple(present), heads, head_dim, dtype, names, _gqa_writes(model, pairs)
    )


def _gqa_writes(model: onnx.ModelProto, past_of: dict[str, str]) -> bool:
    """Whether each present output is GroupQueryAttention's present key or value of its own past,
    and that node is the past's only reader: anything else reading it (a Shape for the lengths,
    say) would see the whole shared buffer, not the tokens cached so far."""
    read, readers = {}, {past: 0 for past in past_of.values()}
    for node in model.graph.node:
        for name in node.input:
            if name in readers:
                readers[name] += 1
        if node.op_type == "GroupQueryAttention" and node.domain == "com.microsoft":
            # present key and value <- past key and value; a node without them pairs fewer
            read.update(zip(node.output[1:3], node.input[3:5], strict=False))
    return all(read.get(present) == past and readers[past] == 1 for present, past in past_of.items())


def empty_past(layout: CacheLayout, batch: int) -> dict[str, np.ndarray]:
    """Zero-length past tensors: what a prefill (the whole prompt, nothing cached) is fed."""
    return {n: np.zeros((batch, layout.heads[n], 0, layout.head_dim[n]), layout.dtype) for n in layout.past}
