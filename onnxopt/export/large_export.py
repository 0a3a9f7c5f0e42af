"""Exporting a decoder past 1 GiB of weights with bounded memory: what optimum's exporter is told
and spared so that one copy of the weights is held at a time, as far as torch's exporter allows.

- optimum gathers torch's per-tensor files by loading the whole model beside the PyTorch one,
  and opens an onnxruntime session on it to check dynamic axes, both while PyTorch's copy is still
  held; its post-processing serializes the whole model to find tied weights, which protobuf
  refuses past 2 GB. All three are skipped; io.external_data gathers the files after, tensor by
  tensor, and the parity check (torch_check.py) runs the graph.
- torch's TorchScript exporter folds each Linear's transposed weight into a new constant, a copy
  of every weight beside the module's own (10.7 GB peak for a 4.7 GB Llama-3.2-1B shape). Linear
  modules are therefore given their weights already transposed, and computed as the same MatMul
  (and Add) the folding would have written: the graph reads the parameters themselves.
- Under 2 GB torch's exporter puts the weights inside the protobuf it builds: the C++ model, its
  serialized string and Python's bytes of it, three copies beside the module's own (Qwen2.5-0.5B
  shape, 1.6 GB of fp32: 7.0 GB peak). Its graph is encoded without them (`weights_beside`) and
  each parameter is written from the module's own tensor into model.onnx.data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx import helper, numpy_helper

from onnxopt.io import weight_store
from onnxopt.io.external_data import data_file

# Past this many weight bytes (fp32, or fp16 with --dtype fp16) the export streams its weights
# into model.onnx.data. Qwen2.5-0.5B shape (1.6 GB fp32), 2026-12-07, AMD EPYC: 2.7 GB peak and
# 17 s in torch's exporter this way, 7.0 GB and 44 s through optimum's own export; optimum's
# deduplication of tied weights is lost (+0.18 GB on disk). Below it that deduplication is kept.
LARGE_EXPORT_BYTES = 2**30
# An export that did not stream (an encoder-decoder's parts) but whose file is past this is still
# rewritten with its weights in model.onnx.data (io/external_data.externalize): later steps then
# map its weights instead of parsing it whole (quantize --int4 of the same model: 7.0 -> 2.7 GB).
EXTERNAL_FROM_BYTES = 2**30
LARGE_EXPORT_NOTE = (
    "weights past 1 GiB: written tensor by tensor into model.onnx.data; tied weights are kept as "
    "two copies (optimum's deduplication reads the whole model as one protobuf)"
)


@contextlib.contextmanager
def bounded_export(on_layer=None) -> Iterator[None]:
    """optimum's main_export run inside this block holds one copy of the weights (module doc).
    `on_layer(done, total)` is told as the exporter's trace reaches each decoder layer."""
    from optimum.exporters.onnx import base, convert
    from optimum.exporters.tasks import TasksManager

    saved = (
        convert.check_model_uses_external_data,
        base.OnnxConfig.fix_dynamic_axes,
        TasksManager.get_model_from_task,
    )
    load = TasksManager.get_model_from_task

    def load_transposed(*args, **kwargs):
        model = transpose_linears(load(*args, **kwargs))
        if on_layer is not None:
            watch_layers(model, on_layer)
        return model

    convert.check_model_uses_external_data = lambda _model: False
    base.OnnxConfig.fix_dynamic_axes = lambda *_args, **_kwargs: None
    TasksManager.get_model_from_task = staticmethod(load_transposed)
    try:
        with weights_beside():
            yield
    finally:
        convert.check_model_uses_external_data, base.OnnxConfig.fix_dynamic_axes = saved[:2]
        TasksManager.get_model_from_task = staticmethod(saved[2])


def transpose_linears(model):
    """Replace each torch.nn.Linear of `model` by a module holding its weight transposed, one at
    a time (one weight's worth of extra memory)."""
    import torch

    class TransposedLinear(torch.nn.Module):
        def __init__(self, linear: torch.nn.Linear):
            super().__init__()
            self.weight_t = torch.nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)
            self.bias = linear.bias

        def forward(self, x):
            y = torch.matmul(x, self.weight_t)
            return y if self.bias is None else y + self.bias

    # Names only: a list of the modules would keep every old weight alive until the end (8.1 GB).
    names = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, TransposedLinear(getattr(parent, child)))
    return model


def watch_layers(model, on_layer) -> None:
    """Call `on_layer(done, total)` as a forward pass enters each layer of the model's longest
    ModuleList (its decoder layers) and leaves the last: progress through the exporter's trace,
    a minute or more of a 1B model's export with nothing to show (issue 28)."""
    import torch

    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    layers = max(lists, key=len, default=None)
    if not layers:
        return
    total = len(layers)
    for done, layer in enumerate(layers):
        layer.register_forward_pre_hook(lambda *_args, done=done: on_layer(done, total))
    layers[-1].register_forward_hook(lambda *_args: on_layer(total, total))


@contextlib.contextmanager
def weights_beside() -> Iterator[None]:
    """torch's TorchScript exporter, inside this block, encodes graphs without their weights and
    writes each parameter from its own tensor into `<model>.data` beside the model file (module
    doc). Where it is given no file path, it encodes as it would have."""
    import torch

    graph_class = torch._C.Graph
    encode = graph_class._export_onnx

    # torch 2.13's binding: (graph, params, opset, dynamic_axes, defer_weight_export,
    # operator_export_type, strip_doc_string, keep_initializers_as_inputs, custom_opsets,
    # add_node_names, model_file_location, node_attr_to_name)
    def export_onnx(graph, params, *args):
        location, keep_inputs = args[-2], args[5]
        if not location:
            return encode(graph, params, *args)
        proto, export_map, _external, names = encode(graph, {}, *args)  # params become inputs
        return _with_weights(proto, params, Path(location), keep_inputs), export_map, True, names

    graph_class._export_onnx = export_onnx
    try:
        yield
    finally:
        graph_class._export_onnx = encode


def _with_weights(proto: bytes, params: dict, path: Path, keep_inputs: bool) -> bytes:
    """The encoded graph with each input named in `params` an initializer again, its data written
    to `data_file(path)` (1 KiB or more) or kept inline (shapes, axes: shape inference reads them)."""
    model = onnx.ModelProto.FromString(proto)
    target = data_file(path)
    kept = []
    with target.open("wb") as out:
        for value in model.graph.input:
            tensor = params.get(value.name)
            if tensor is None or keep_inputs:
                kept.append(value)
            if tensor is not None:
                model.graph.initializer.append(_written(tensor, value.name, out, target.name))
    del model.graph.input[:]
    model.graph.input.extend(kept)
    if target.stat().st_size == 0:  # nothing of 1 KiB: no data file
        target.unlink()
    return model.SerializeToString()


def _written(tensor, name: str, out, location: str) -> onnx.TensorProto:
    import torch

    tensor = tensor.detach().contiguous()
    bf16 = tensor.dtype == torch.bfloat16
    values = (tensor.view(torch.int16) if bf16 else tensor).numpy()
    data_type = onnx.TensorProto.BFLOAT16 if bf16 else helper.np_dtype_to_tensor_dtype(values.dtype)
    if values.nbytes < 1024:
        small = numpy_helper.from_array(values, name)
        small.data_type = data_type
        return small
    offset = weight_store.append_aligned(out, memoryview(values.reshape(-1)).cast("B"))
    return weight_store.external_stub(name, data_type, values.shape, location, offset, values.nbytes)
