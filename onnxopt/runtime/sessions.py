"""Building onnxruntime inference sessions for one execution provider, with explicit settings.
Which providers can run here, and OpenVINO's plugin: onnxopt.runtime.providers."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from onnxopt.choices import EXECUTION_MODES, OPT_LEVELS
from onnxopt.errors import OnnxoptError, first_line
from onnxopt.runtime.openvino_runtime import ROUTE_RUNTIME, OpenVinoSession
from onnxopt.runtime.providers import (
    OPENVINO_DEVICES,
    PROVIDERS,
    SHORT_NAMES,
    available,
    openvino_devices,
    openvino_route,
    provider_name,
)


@dataclass(frozen=True)
class SessionSettings:
    """Everything that decides how a session runs. Saved in a model's manifest by `bench --ep auto`
    and `--tune`, and read back by later `bench` and `eval` runs."""

    provider: str = "cpu"
    intra_threads: int | None = None  # None: onnxruntime's (or OpenVINO's) own choice
    inter_threads: int | None = None
    opt_level: str = "all"
    execution_mode: str = "sequential"
    # OpenVINO: "device" (CPU/GPU/NPU, chosen by us) and any OpenVINO provider option, e.g.
    # "load_config" with INFERENCE_PRECISION_HINT or PERFORMANCE_HINT.
    provider_options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        provider_name(self.provider)
        if self.opt_level not in OPT_LEVELS:
            raise OnnxoptError(
                f"unknown graph optimization level {self.opt_level!r}", f"use one of {OPT_LEVELS}"
            )
        if self.execution_mode not in EXECUTION_MODES:
            raise OnnxoptError(
                f"unknown execution mode {self.execution_mode!r}", f"use one of {EXECUTION_MODES}"
            )
        for threads in (self.intra_threads, self.inter_threads):
            if threads is not None and threads < 1:
                raise OnnxoptError(f"thread counts must be at least 1, got {threads}", "or leave them unset")
        device = self.provider_options.get("device", "CPU")
        if device not in OPENVINO_DEVICES:
            raise OnnxoptError(f"unknown OpenVINO device {device!r}", f"use one of {OPENVINO_DEVICES}")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SessionSettings:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["provider_options"] = {
            str(k): str(v) for k, v in dict(known.get("provider_options", {})).items()
        }
        return cls(**known)

    def describe(self) -> str:
        """A short label for tables: only what differs from the defaults."""
        parts = []
        if self.intra_threads:
            parts.append(f"intra {self.intra_threads}")
        if self.inter_threads:
            parts.append(f"inter {self.inter_threads}")
        if self.opt_level != "all":
            parts.append(f"opt {self.opt_level}")
        if self.execution_mode != "sequential":
            parts.append(self.execution_mode)
        parts.extend(f"{k}={v}" for k, v in sorted(self.provider_options.items()))
        return ", ".join(parts) or "defaults"


def _session_options(settings: SessionSettings, profile: bool, record_placement: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[settings.opt_level]
    options.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL
        if settings.execution_mode == "parallel"
        else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    # Fatal only: onnxruntime's own error lines (red, with ANSI codes even in a file) would reach
    # the terminal beside onnxopt's one-line message for the same failure.
    options.log_severity_level = 4
    if settings.intra_threads:
        options.intra_op_num_threads = settings.intra_threads
    # One inter-op thread unless asked: a second pool only helps parallel execution mode.
    options.inter_op_num_threads = settings.inter_threads or 1
    options.enable_profiling = profile
    if record_placement:
        options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    return options


def make_session(
    onnx_path: Path | bytes,
    provider: str = "cpu",
    threads: int | None = None,
    profile: bool = False,
    settings: SessionSettings | None = None,
    record_placement: bool = False,
    initializers: dict | None = None,
):
    """One session on one provider. `settings` wins over `provider`/`threads` when given.
    Threads: intra-op count (None lets onnxruntime pick); inter-op is 1 unless settings say otherwise.
    `initializers` (name -> array) stand for the model's entries of those names, never read (CPU)."""
    import onnxruntime as ort

    if settings is None:
        settings = SessionSettings(provider=provider, intra_threads=threads)
    ort.set_default_logger_severity(4)
    ok, why = available(settings.provider)
    if not ok:
        raise OnnxoptError(f"execution provider {settings.provider} is unavailable", why)
    options = _session_options(settings, profile, record_placement)
    name = provider_name(settings.provider)
    provider_options = dict(settings.provider_options)
    providers: list | None = [name] if name == PROVIDERS["cpu"] else [name, PROVIDERS["cpu"]]
    if settings.provider == "openvino":
        device = provider_options.pop("device", "CPU")
        if openvino_route(device)[0] == ROUTE_RUNTIME:
            return OpenVinoSession(onnx_path, device, settings.intra_threads, provider_options)
        if settings.intra_threads:
            provider_options.setdefault("num_of_threads", str(settings.intra_threads))
        devices = openvino_devices(device)
        if devices:  # the plugin
            options.add_provider_for_devices(devices, provider_options)
            providers = None
        elif name in ort.get_available_providers():  # an onnxruntime build with OpenVINO inside
            providers = [(name, {"device_type": device, **provider_options}), PROVIDERS["cpu"]]
        else:
            raise OnnxoptError(f"OpenVINO has no {device} device here", "use device CPU")
    values = [ort.OrtValue.ortvalue_from_numpy(a) for a in (initializers or {}).values()]
    for name, value in zip(initializers or {}, values, strict=True):
        options.add_initializer(name, value)
    if values:
        # Shared initializers are used where they lie (a map of the data file: page cache, not
        # process memory); prepacking would copy each MatMul weight. A 410 MB weight: 445 MB of
        # anonymous memory with prepacking (and with add_external_initializers, which copies),
        # none without; onnxruntime 1.31, 2026-12-07.
        options.add_session_config_entry("session.disable_prepacking", "1")
    try:
        source = onnx_path if isinstance(onnx_path, bytes) else str(onnx_path)
        session = ort.InferenceSession(source, options, providers=providers)
        session.onnxopt_initializers = (initializers, values)  # onnxruntime reads them, unowned
        return session
    except Exception as exc:
        what = "the model" if isinstance(onnx_path, bytes) else str(onnx_path)
        first = first_line(exc, 200)
        raise OnnxoptError(
            f"onnxruntime cannot load {what} on {settings.provider}: {first}",
            "check the model with `onnxopt inspect`, or export it again",
        ) from exc


def session_for_model(model, provider: str = "cpu"):
    """A session on an in-memory model: from bytes, or through a temporary file past 2 GB."""
    from onnxopt.io.external_data import has_external
    from onnxopt.io.leftovers import temp_dir
    from onnxopt.io.saving import is_large
    from onnxopt.io.scratch import write_temp_model

    if not (is_large(model) or has_external(model)):
        return make_session(model.SerializeToString(), provider)
    with temp_dir("session") as tmp:
        return make_session(write_temp_model(model, Path(tmp)), provider)


def check_loads(onnx_path: Path) -> None:
    """Refuse an input onnxruntime cannot load before any pass works on it: passes and
    onnxruntime's own tools assume a well-formed graph and fail obscurely on a broken one."""
    make_session(onnx_path, "cpu", threads=1)


def node_placement(session) -> tuple[dict[str, int], dict[str, int]]:
    """Nodes per provider (short names) and the op types that fell back to the CPU provider, for a
    session made with `record_placement=True`. Counts are of the optimized graph's nodes, before
    a provider fuses them into its own subgraphs."""
    counts: dict[str, int] = {}
    fallback: dict[str, int] = {}
    if isinstance(session, OpenVinoSession):  # one engine: its executed layers by precision
        for layer, n in session.layer_precisions().items():
            key = f"openvino {layer.rsplit(' ', 1)[-1]}"
            counts[key] = counts.get(key, 0) + n
        return counts, fallback
    try:
        subgraphs = session.get_provider_graph_assignment_info()
    except Exception:  # older onnxruntime, or recording not enabled
        return counts, fallback
    main = session.get_providers()[0]
    for subgraph in subgraphs:
        short = SHORT_NAMES.get(subgraph.ep_name, subgraph.ep_name)
        nodes = subgraph.get_nodes()
        counts[short] = counts.get(short, 0) + len(nodes)
        if subgraph.ep_name != main:
            for node in nodes:
                fallback[node.op_type] = fallback.get(node.op_type, 0) + 1
    return counts, fallback


def probe_session(model, tensors: list[str], provider: str = "cpu", only: bool = False, cut=None):
    """A session on `model` with the intermediate `tensors` exposed as extra outputs.
    With `only`, they are its only outputs and the nodes they do not depend on are dropped, so a
    probe of an early layer does not run the layers above it. `cut` ({name: onnx element type},
    with `only`) names tensors the caller feeds instead: the nodes below them are dropped too, and
    those the probe needs become its inputs (a re-fit of layer 20 starts from layer 19's output)."""
    import onnx

    from onnxopt.io import weight_store
    from onnxopt.io.external_data import without_initializers, write_mapped, write_streamed
    from onnxopt.io.leftovers import temp_dir
    from onnxopt.passes.graph_edits import keep_ancestors

    # The graph is copied, not the weights: they are streamed from `model` into the probe's file
    # (a copy of a 4 GB model here was one of quantize's five, issue 28).
    probe = without_initializers(model)
    if only:
        del probe.graph.output[:]
        fed = keep_ancestors(probe.graph, tensors, set(cut or ()))
        kept_info = [v for v in probe.graph.value_info if v.name not in fed]
        del probe.graph.value_info[:]
        probe.graph.value_info.extend(kept_info)
        for name in sorted(fed):
            probe.graph.input.append(onnx.helper.make_tensor_value_info(name, cut[name], None))
    present = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in present:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))  # typed by onnxruntime
    with temp_dir("probe") as tmp:
        path = Path(tmp) / "probe.onnx"
        if weight_store.active() is None:
            return make_session(write_streamed(probe, model.graph.initializer, path), provider)
        # Weights on disk: mapped, not copied (io/external_data.py: write_mapped).
        mapped = write_mapped(probe, model.graph.initializer, path)
        return make_session(path, provider, initializers=mapped)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
