"""Weight-only quantization to MatMulNBits (onnxruntime.quantization's MatMulNBitsQuantizer).

Each MatMul weight is cut into blocks of `block_size` input channels, each with its own scale
(and zero point, asymmetric), in 4 or 8 bits. With accuracy level 4 the CPU kernel quantizes
the activations to int8 block by block as well and multiplies in int8; at 0 it dequantizes the
weights and multiplies in fp32. Decode is memory-bound, so the bytes read per token decide its
speed: 4 bits move 8x fewer than fp32, 8 bits 4x.

Algorithms: `rtn` rounds to the nearest level (onnxruntime's default quantizer), `hqq` searches
each block's scale and zero point to minimise the weight error (Half-Quadratic Quantization),
`gptq` corrects each column's rounding error in the columns not yet quantized, using the
activations' second moments from calibration data. `offset` and `asym` are onnxopt's own
(quantize_weights_offset.py).
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx

from onnxopt.graph_queries.int8_ops import int8_op_counts
from onnxopt.io.scratch import through_files
from onnxopt.passes.base import Pass, PassResult
from onnxopt.passes.quantize_weights_8bit import HALF_REASON, QuantizeWeights8Bit
from onnxopt.passes.quantize_weights_offset import PARTIAL_BLOCKS, QuantizeWeightsOffset

OWN_ALGORITHMS = ("offset", "asym")  # onnxopt's int4 grids (quantize_weights_offset.py)
_SUBGRAPHS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


class _Reader:
    """onnxruntime's CalibrationDataReader over a list of feeds, rewindable (GPTQ copies it)."""

    def __init__(self, feeds: list[dict]):
        self.feeds, self.at = feeds, 0

    def get_next(self):
        if self.at >= len(self.feeds):
            return None
        self.at += 1
        return self.feeds[self.at - 1]

    def __iter__(self):
        return iter(self.feeds)

    def rewind(self) -> None:
        self.at = 0


def _config(algo: str, bits: int, block_size: int, accuracy_level: int, feeds):
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    if algo == "hqq":
        return nbits.HQQWeightOnlyQuantConfig(block_size=block_size, bits=bits)
    if algo == "gptq":
        return nbits.GPTQWeightOnlyQuantConfig(
            calibration_data_reader=_Reader(list(feeds)), block_size=block_size
        )
    return nbits.DefaultWeightOnlyQuantConfig(
        block_size=block_size, is_symmetric=False, accuracy_level=accuracy_level, bits=bits
    )


class QuantizeWeights(Pass):
    """MatMul weights to `bits` bits in blocks (MatMulNBits); `exclude` names MatMuls kept fp32,
    `include`, when given, the only ones quantized."""

    in_place = False
    changes_input = False

    def __init__(
        self,
        bits: int = 4,
        block_size: int = 32,
        algo: str = "rtn",
        accuracy_level: int = 4,
        exclude: tuple[str, ...] = (),
        calibration: Iterable[dict] = (),
        include: tuple[str, ...] = (),
        importance=None,
        on_progress=None,
    ):
        self.bits, self.block_size, self.algo = bits, block_size, algo
        self.accuracy_level, self.exclude, self.calibration = accuracy_level, exclude, calibration
        self.include = include
        self.importance = importance  # offset: (model, tensors) -> E[x^2] per channel, the searched grid
        self.on_progress = on_progress  # offset: (MatMuls done, total)
        self.name = f"quantize-int{bits}-{algo}"

    def call(self, model: onnx.ModelProto) -> PassResult:
        if self.algo in OWN_ALGORITHMS:
            return self._offset(model)
        if self.bits == 8 and self.algo == "rtn":
            return self._int8(model)
        return self.ort_quantizer(model)

    def ort_quantizer(self, model: onnx.ModelProto) -> PassResult:
        """onnxruntime's MatMulNBitsQuantizer on the whole model (it loads every weight)."""
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        # onnxruntime's nodes_to_include adds to its op types rather than restricting them.
        others = [
            n.name
            for n in model.graph.node
            if self.include and n.op_type == "MatMul" and n.name not in self.include
        ]

        def tool(src, dst) -> None:
            quantizer = MatMulNBitsQuantizer(
                onnx.load(str(src)),
                bits=self.bits,
                block_size=self.block_size,
                is_symmetric=False,
                accuracy_level=self.accuracy_level,
                nodes_to_exclude=list(self.exclude) + others,
                algo_config=_config(
                    self.algo, self.bits, self.block_size, self.accuracy_level, self.calibration
                ),
            )
            quantizer.process()
            # External data: the 8-bit head of a 3B shape, saved with its int4 body and fp32
            # embeddings, is past 2 GB ("Failed to serialize proto"); the file is read back whole.
            quantizer.model.save_model_to_file(str(dst), use_external_data_format=True)

        quantized = through_files(model, tool)
        done = _count(quantized, "MatMulNBits") - _count(model, "MatMulNBits")
        kept = [n.name for n in quantized.graph.node if n.op_type == "MatMul"]
        details = {
            "layout": f"MatMulNBits, {self.bits} bits, block {self.block_size}, level {self.accuracy_level}",
            "int8_ops": {**int8_op_counts(quantized), "MatMulNBits": done},
            "algorithm": self.algo,
            "skipped": {name: "activation x activation, or excluded" for name in kept},
        }
        return PassResult(quantized, done > 0, details)

    def call_owned(self, model: onnx.ModelProto) -> PassResult:
        if self.algo in OWN_ALGORITHMS:
            return self._offset(model, owned=True)
        if self.bits == 8 and self.algo == "rtn":
            return self._int8(model, owned=True)
        return self(model)

    def _int8(self, model: onnx.ModelProto, owned: bool = False) -> PassResult:
        """onnxruntime's 8-bit RTN grid, one weight at a time (quantize_weights_8bit.py); its own
        quantizer for what that pass leaves: depths of partial blocks (it pads the last block),
        fp16/bf16 weights, and graphs with subgraphs (it quantizes inside If and Loop)."""
        if any(a.type in _SUBGRAPHS for n in model.graph.node for a in n.attribute):
            return self.ort_quantizer(model)
        before = _count(model, "MatMulNBits")
        own = QuantizeWeights8Bit(self.block_size, self.accuracy_level, self.exclude, self.include)
        result = own.call_owned(model) if owned else own(model)
        skipped = result.details["skipped"].items()
        left = tuple(name for name, why in skipped if PARTIAL_BLOCKS in why or HALF_REASON in why)
        quantized = result.model
        if left:
            rest = QuantizeWeights(8, self.block_size, "rtn", self.accuracy_level, include=left)
            quantized = rest.ort_quantizer(quantized).model
        kept = [n.name for n in quantized.graph.node if n.op_type == "MatMul"]
        layout = f"MatMulNBits, 8 bits, block {self.block_size}, level {self.accuracy_level}"
        made = _count(quantized, "MatMulNBits") - before
        details = {
            "layout": layout,
            "int8_ops": {**int8_op_counts(quantized), "MatMulNBits": made},
            "algorithm": "rtn",
            "skipped": {name: "activation x activation, or excluded" for name in kept},
        }
        return PassResult(quantized, made > 0, details)

    def _offset(self, model: onnx.ModelProto, owned: bool = False) -> PassResult:
        """Offsets where the input channels fill whole blocks; onnxruntime's RTN (which pads the
        last block) for the rest, e.g. a pruned FFN of 1,133 channels."""
        before = _count(model, "MatMulNBits")
        offset = QuantizeWeightsOffset(
            self.block_size,
            self.accuracy_level,
            self.exclude,
            self.importance,
            self.on_progress,
            integer_zero=self.algo == "asym",
        )
        result = offset.call_owned(model) if owned else offset(model)
        skipped = result.details["skipped"]
        partial = tuple(name for name, why in skipped.items() if PARTIAL_BLOCKS in why)
        if partial:
            rest = QuantizeWeights(self.bits, self.block_size, "rtn", self.accuracy_level, include=partial)
            result = PassResult(rest.call(result.model).model, True, result.details)
            skipped = {name: why for name, why in skipped.items() if name not in partial}
        made = _count(result.model, "MatMulNBits") - before
        level = self.accuracy_level
        grid = "integer zero points" if self.algo == "asym" else "+ block offsets"
        result.details.update(
            layout=f"MatMulNBits {grid}, 4 bits, block {self.block_size}, level {level}",
            algorithm=self.algo,
            int8_ops={**int8_op_counts(result.model), "MatMulNBits": made},
            skipped=skipped,
            rtn=list(partial),
        )
        return result


def _count(model: onnx.ModelProto, op_type: str) -> int:
    return sum(1 for n in model.graph.node if n.op_type == op_type)
