"""`onnxopt export`'s options, written once: the command line and the recipe schema derive from it."""

from __future__ import annotations

from dataclasses import dataclass

from onnxopt.options import VERIFY_HELP, Options, option

# The opsets optimum's exporter can write: it runs torch's TorchScript exporter (dynamo=False),
# which takes 7 to 20 (torch.onnx._constants; tests/cli/test_hostile_cli.py checks they still agree).
# Checked with the other options, before torch is imported: --opset 99 once failed only after 16 s
# of export, with torch's whole graph on stdout.
MIN_OPSET, MAX_OPSET = 7, 20


@dataclass(frozen=True)
class ExportConfig(Options):
    bundled: str | None = option(
        None,
        "A model shipped with onnxopt, when no MODEL is given (default: minilm).",
        choices=("minilm", "smollm2"),
    )
    task: str = option("auto", "optimum task, e.g. feature-extraction, text-classification.")
    cache: bool = option(
        True, "Export decoders and encoder-decoders with their KV cache (what generation reads)."
    )
    opset: int | None = option(
        None,
        f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default: optimum's choice for the model).",
        low=MIN_OPSET,
        high=MAX_OPSET,
    )
    dtype: str = option(
        "fp32",
        "Weights and activations of the graph: fp32 (the CPU provider's fast path) or fp16 (half "
        "the size; read from a bf16/fp16 checkpoint without an fp32 copy). Past 2 GB, see README.",
        choices=("fp32", "fp16"),
    )
    atol: float = option(1e-4, "Fail if ONNX and PyTorch outputs differ by more than this.", low=0)
    trust_remote_code: bool = option(False, "Allow model code from the hub to run.")
    verify_loading: bool = option(False, VERIFY_HELP)
