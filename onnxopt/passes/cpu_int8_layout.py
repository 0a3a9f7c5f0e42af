"""Lay a quantized graph out for onnxruntime's CPU int8 kernels.

`quantize_static` writes portable QDQ: DequantizeLinear pairs around every MatMul, which the CPU
provider fuses at load time only where its patterns match. On a fused BERT graph they mostly did
not, and profiling all-MiniLM-L6-v2 (seq 128, 2 threads) showed where the time went:
- Q/DQ pairs on MatMul *outputs* made onnxruntime requantize to uint8 (QLinearMatMul) and
  dequantize again before the next fp32 op: two passes over the tensor and one more rounding;
- the residual branch read the fake-quantized LayerNorm output, so it paid a DequantizeLinear and
  carried int8 rounding into the skip connection;
- the contrib SkipLayerNormalization and BiasGelu kernels ran 2.5x and 1.8x slower than
  LayerNormalization plus an add, and Gelu alone (measured on [32, 128, 384] / [32, 128, 1536]).

So this pass rewrites, each step a local pattern with its own check:
1. DQ(x_u8) -> MatMul <- DQ(W_s8)  into  MatMulIntegerToFloat(x_u8, W_s8, scales, zero points);
2. DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul  into  DynamicQuantizeMatMul;
3. the bias of the op that consumes such a MatMul (SkipLayerNormalization's, BiasGelu's, a 1-D
   Add) moves into the int8 op, which adds it while scaling its int32 accumulators;
4. SkipLayerNormalization becomes Sum + LayerNormalization. Sum, not Add: onnxruntime fuses an
   Add feeding a LayerNormalization back into SkipLayerNormalization at load time;
5. a Q -> DQ pair whose consumers are all fp32 ops is removed: they read the original tensor.
Whatever does not match is left as it was, so the result is never wrong, only less fast.
"""

from __future__ import annotations

import onnx
from onnx import helper

from onnxopt.passes.base import Pass, PassResult, op_histogram
from onnxopt.passes.graph_index import Graph, attributes, keep_ancestors

_MS = "com.microsoft"
# Ops that onnxruntime fuses with a DequantizeLinear feeding them: such a DQ must stay.
_DQ_FUSING = ("MatMul", "Gemm", "Conv", "Attention")


class _Index(Graph):
    """Graph lookups plus the questions the rewrites ask; rebuilt after each rewrite."""

    def __init__(self, model: onnx.ModelProto):
        super().__init__(model)
        self.outputs = {o.name for o in model.graph.output}

    def only_consumer(self, tensor: str) -> onnx.NodeProto | None:
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in self.outputs else None

    def made_by(self, tensor: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(tensor)
        return node if node is not None and node.op_type == op_type else None

    def dims(self, name: str) -> list[int] | None:
        return list(self.inits[name].dims) if name in self.inits else None


def _replace_nodes(
    graph: onnx.GraphProto, old: list[onnx.NodeProto], new: dict[int, list[onnx.NodeProto]]
) -> None:
    """Drop `old` nodes; `new` maps a node's id to the nodes taking its place, in order."""
    gone = {id(n) for n in old}
    nodes = []
    for n in graph.node:
        if id(n) in new:
            nodes.extend(new[id(n)])
        elif id(n) not in gone:
            nodes.append(n)
    del graph.node[:]
    graph.node.extend(nodes)


def _rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Point every reader of `old` at `new`; callers make sure `old` is not a graph output."""
    for n in graph.node:
        for k, name in enumerate(n.input):
            if name == old:
                n.input[k] = new


def static_matmuls(model: onnx.ModelProto) -> int:
    """Rewrite 1: DQ(x) -> MatMul <- DQ(W)  =>  MatMulIntegerToFloat."""
    ix, done, graph = _Index(model), 0, model.graph
    swaps: dict[int, onnx.NodeProto] = {}
    for mm in graph.node:
        if mm.op_type != "MatMul" or mm.domain not in ("", "ai.onnx"):
            continue
        act, wdq = ix.made_by(mm.input[0], "DequantizeLinear"), ix.made_by(mm.input[1], "DequantizeLinear")
        if act is None or wdq is None or wdq.input[0] not in ix.inits or act.input[0] in ix.inits:
            continue
        wdims, wscale = ix.dims(wdq.input[0]), ix.dims(wdq.input[1])
        per_channel_ok = wscale == [] or (wscale == [wdims[1]] and attributes(wdq).get("axis", 1) in (1, -1))
        if len(wdims) != 2 or not per_channel_ok or ix.dims(act.input[1]) not in ([], [1]):
            continue
        if ix.inits[wdq.input[0]].data_type != onnx.TensorProto.INT8:
            continue
        inputs = [act.input[0], wdq.input[0], act.input[1], wdq.input[1]]
        inputs += [act.input[2] if len(act.input) > 2 else "", wdq.input[2] if len(wdq.input) > 2 else ""]
        swaps[id(mm)] = [
            helper.make_node("MatMulIntegerToFloat", inputs, list(mm.output), name=mm.name, domain=_MS)
        ]
        done += 1
    _replace_nodes(graph, [], swaps)
    return done


def dynamic_matmuls(model: onnx.ModelProto) -> int:
    """Rewrite 2: DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul  =>  DynamicQuantizeMatMul."""
    ix, done, graph = _Index(model), 0, model.graph
    drop, swaps = [], {}
    for mmi in graph.node:
        if mmi.op_type != "MatMulInteger" or len(mmi.input) < 2 or mmi.input[1] not in ix.inits:
            continue
        dql = ix.made_by(mmi.input[0], "DynamicQuantizeLinear")
        cast = ix.only_consumer(mmi.output[0])
        if dql is None or cast is None or cast.op_type != "Cast":
            continue
        mul = ix.only_consumer(cast.output[0])
        if mul is None or mul.op_type != "Mul":
            continue
        scales = mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0]
        smul = ix.made_by(scales, "Mul")
        if smul is None or dql.output[1] not in smul.input:
            continue
        wscale = smul.input[1] if smul.input[0] == dql.output[1] else smul.input[0]
        if wscale not in ix.inits or len(ix.consumers.get(dql.output[0], [])) != 1:
            continue
        wzp = mmi.input[3] if len(mmi.input) > 3 else ""
        swaps[id(mul)] = [
            helper.make_node(
                "DynamicQuantizeMatMul",
                [dql.input[0], mmi.input[1], wscale, wzp],
                list(mul.output),
                name=mmi.name,
                domain=_MS,
            )
        ]
        drop += [dql, mmi, cast]
        if len(ix.consumers.get(smul.output[0], [])) == 1:
            drop.append(smul)
        done += 1
    _replace_nodes(graph, drop, swaps)
    return done


def fold_biases(model: onnx.ModelProto) -> int:
    """Rewrite 3: move the consumer's bias into the int8 MatMul that feeds it."""
    ix, done, graph = _Index(model), 0, model.graph
    drop, swaps = [], {}
    bias_slot = {"MatMulIntegerToFloat": 6, "DynamicQuantizeMatMul": 4}
    for q in graph.node:
        if q.op_type not in bias_slot or q.domain != _MS or len(q.input) > bias_slot[q.op_type]:
            continue
        width = ix.dims(q.input[1])[1]
        user = ix.only_consumer(q.output[0])
        if user is None:
            continue

        def is_bias(name: str, width: int = width) -> bool:
            return name in ix.inits and ix.dims(name) == [width] and ix.inits[name].data_type == 1

        bias = None
        if user.op_type == "SkipLayerNormalization" and user.input[0] == q.output[0] and len(user.input) > 4:
            if is_bias(user.input[4]):
                bias = user.input[4]
                del user.input[4:]
        elif user.op_type == "BiasGelu" and user.input[0] == q.output[0] and is_bias(user.input[1]):
            bias = user.input[1]
            swaps[id(user)] = [
                helper.make_node("Gelu", [q.output[0]], list(user.output), name=user.name, domain=_MS)
            ]
        elif user.op_type == "Add" and q.output[0] in user.input and user.output[0] not in ix.outputs:
            other = user.input[1] if user.input[0] == q.output[0] else user.input[0]
            if is_bias(other):
                bias = other
                drop.append(user)
                _rename_input(graph, user.output[0], q.output[0])
        if bias is None:
            continue
        while len(q.input) < bias_slot[q.op_type]:
            q.input.append("")
        q.input.append(bias)
        done += 1
    _replace_nodes(graph, drop, swaps)
    return done


def unfuse_skip_layernorm(model: onnx.ModelProto) -> int:
    """Rewrite 4: SkipLayerNormalization -> [Add bias] + Sum + LayerNormalization."""
    ix, done, graph = _Index(model), 0, model.graph
    swaps: dict[int, list[onnx.NodeProto]] = {}
    for sln in graph.node:
        if sln.op_type != "SkipLayerNormalization" or sln.domain != _MS:
            continue
        if any(o and (ix.consumers.get(o) or o in ix.outputs) for o in sln.output[1:]):
            continue  # mean / inv-std / sum outputs are read: keep the fused op
        x, skip, gamma = sln.input[0], sln.input[1], sln.input[2]
        beta = sln.input[3] if len(sln.input) > 3 else ""
        bias = sln.input[4] if len(sln.input) > 4 else ""
        nodes = []
        if bias:
            nodes.append(helper.make_node("Add", [x, bias], [f"{sln.name}_biased"], name=f"{sln.name}_bias"))
            x = f"{sln.name}_biased"
        nodes.append(helper.make_node("Sum", [x, skip], [f"{sln.name}_sum"], name=f"{sln.name}_sum"))
        ln_inputs = [f"{sln.name}_sum", gamma] + ([beta] if beta else [])
        nodes.append(
            helper.make_node(
                "LayerNormalization",
                ln_inputs,
                [sln.output[0]],
                name=sln.name,
                axis=-1,
                epsilon=attributes(sln).get("epsilon", 1e-12),
            )
        )
        swaps[id(sln)] = nodes
        done += 1
    _replace_nodes(graph, [], swaps)
    return done


def drop_float_qdq(model: onnx.ModelProto) -> int:
    """Rewrite 5: Q -> DQ pairs read only by fp32 ops are removed."""
    ix, done, graph = _Index(model), 0, model.graph
    drop = []
    for dq in graph.node:
        if dq.op_type != "DequantizeLinear" or dq.output[0] in ix.outputs:
            continue
        q = ix.made_by(dq.input[0], "QuantizeLinear")
        if q is None or list(q.input[1:]) != list(dq.input[1:]):
            continue
        users = ix.consumers.get(dq.output[0], [])
        if not users or any(u.op_type in _DQ_FUSING for u in users):
            continue
        _rename_input(graph, dq.output[0], q.input[0])
        drop.append(dq)
        done += 1
    # A Q whose every reader went must go now, not with the dead nodes at the end: left in, it
    # would be a second reader of the MatMul output and stop the bias fold after this.
    gone = {id(n) for n in drop}
    drop += [
        n
        for n in graph.node
        if n.op_type == "QuantizeLinear"
        and any(id(u) in gone for u in ix.consumers.get(n.output[0], []))
        and all(id(u) in gone for u in ix.consumers.get(n.output[0], []))
    ]
    _replace_nodes(graph, drop, {})
    return done


class CpuInt8Layout(Pass):
    name = "cpu-int8-layout"

    def call(self, model: onnx.ModelProto) -> PassResult:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        g = out.graph
        opset = next((o.version for o in out.opset_import if o.domain in ("", "ai.onnx")), 0)
        changes = {
            "static_matmuls": static_matmuls(out),
            "dynamic_matmuls": dynamic_matmuls(out),
            "float_qdq_removed": drop_float_qdq(out),
            "biases_folded": fold_biases(out),
            # LayerNormalization is an ONNX op from opset 17 on.
            "skip_layernorms_unfused": unfuse_skip_layernorm(out) if opset >= 17 else 0,
        }
        keep_ancestors(g, [o.name for o in g.output])  # nodes and weights the rewrites left unread
        del g.value_info[:]  # shapes of rewritten tensors; onnxruntime infers them again
        if any(n.domain == _MS for n in g.node) and not any(o.domain == _MS for o in out.opset_import):
            out.opset_import.append(helper.make_opsetid(_MS, 1))
        modified = any(changes.values()) or op_histogram(model) != op_histogram(out)
        return PassResult(out, modified, {k: v for k, v in changes.items() if v})
