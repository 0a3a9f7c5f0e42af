"""Exporting a decoder past 2 GB of weights with bounded memory: what optimum's exporter is told
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
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

# Past this many fp32 weight bytes the export streams its weights (LARGE_EXPORT_NOTE).
LARGE_EXPORT_BYTES = 2**31 - 2**27
LARGE_EXPORT_NOTE = (
    "weights past 2 GB: written tensor by tensor into model.onnx.data; tied weights are kept as "
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
