"""What a generation may ask of a decoder, checked from its files before any session is made: its
length against the positions the model has, its batch x length against the memory it needs.

A hostile probe found `bench --generate --batch 4000` killed at a 4 GB limit after 21 s, `--batch
100000` ending in onnxruntime's arena error, and on a config.json without max_position_embeddings
`--new-tokens 1000000000` generating until the position table ran out (a Gather index error) or,
with rotary positions computed on the fly, without end. Each is now one line within seconds.
"""

from __future__ import annotations

import math
import resource
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxopt.errors import OnnxoptError
from onnxopt.io.cache_layout import CacheLayout
from onnxopt.io.limits import graph_positions
from onnxopt.io.model_files import ModelRef
from onnxopt.io.model_info import ModelInfo

# Where neither config.json nor the graph bounds the positions (rotary angles computed from
# position_ids): the longest generation onnxopt runs. Models past it state their limit.
POSITION_CAP = 32768
# The peak resident memory of a generation over the estimate below: tiny GPT-2 and Llama at batch
# 250-1000, prompt 100, measured 1.05x and 1.45x (onnxruntime's arena keeps freed blocks).
MEMORY_MARGIN = 1.5
_GIB = 1 << 30


@dataclass(frozen=True)
class Positions:
    limit: int
    what: str  # what says so, for messages: "n_positions 256", "position table of 256 rows", ...


def positions(ref: ModelRef | ModelInfo, model: onnx.ModelProto) -> Positions:
    """The longest sequence the model takes: the smaller of its config.json's and its graph's
    limits; a config that says more than the graph holds is named beside the graph's."""
    config, graph = ModelInfo.read(ref).max_positions, graph_positions(model)
    if graph is not None and (config is None or graph[0] < config[0]):
        said = f" (its config.json says {config[1]} {config[0]})" if config else ""
        return Positions(graph[0], graph[1] + said)
    if config is not None:
        return Positions(config[0], f"{config[1]} {config[0]}")
    why = "onnxopt's cap where neither config.json nor the graph states a position limit"
    return Positions(POSITION_CAP, f"{POSITION_CAP} positions, {why}")


def check_length(ref: ModelRef | ModelInfo, model: onnx.ModelProto, length: int, option: str) -> Positions:
    found = positions(ref, model)
    if length > found.limit:
        raise OnnxoptError(
            f"{option} {length} exceeds {ModelInfo.read(ref).ref.name}'s {found.what}",
            f"use {option} {found.limit} or less",
        )
    return found


def _logits_width(model: onnx.ModelProto) -> int | None:
    for output in model.graph.output:
        if output.name == "logits":
            dims = output.type.tensor_type.shape.dim
            return (dims[-1].dim_value or None) if dims else None
    return None


def generation_bytes(
    ref: ModelRef | ModelInfo,
    model: onnx.ModelProto,
    layout: CacheLayout,
    batch: int,
    prompt: int,
    total: int,
) -> tuple[int, int]:
    """(KV cache bytes, all bytes) a generation of `total` tokens after a `prompt`-token prefill
    needs at its peak: the cache (twice where each step's presents are new arrays beside the
    pasts), and the prefill's logits (every position's), hidden states and attention scores.
    Weights are not counted: the session holds them whatever the batch."""
    info = ModelInfo.read(ref)
    item = np.dtype(layout.dtype).itemsize
    kv = sum(batch * layout.heads[p] * total * layout.head_dim[p] for p in layout.past) * item
    kv *= 1 if layout.gqa_writes_presents else 2
    width = sum(layout.heads[p] * layout.head_dim[p] for p in layout.past[:1])
    hidden = info.config_int(("hidden_size", "n_embd", "d_model")) or width
    heads = info.config_int(("num_attention_heads", "n_head")) or max(layout.heads.values())
    inner = info.config_int(("intermediate_size", "n_inner")) or 4 * hidden
    vocab = _logits_width(model) or info.config_int(("vocab_size",)) or 1
    prefill = batch * prompt * (vocab + 4 * hidden + 2 * inner) * 4
    scores = 2 * batch * heads * prompt * prompt * 4  # scores and softmax, one layer at a time
    return kv, kv + prefill + scores


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_left() -> int | None:
    """What a cgroup v2 memory limit (a container's) leaves: memory.max less the working set.
    memory.current counts page cache the kernel reclaims on demand, and a container that has just
    read a model holds much of it; inactive_file is taken back out, as the kubelet does."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        stat = Path("/sys/fs/cgroup/memory.stat").read_text().split()
    except (OSError, ValueError):
        return None
    inactive = dict(zip(stat[::2], stat[1::2], strict=False)).get("inactive_file", "0")
    working_set = used - (int(inactive) if inactive.isdigit() else 0)
    return int(limit) - max(working_set, 0) if limit.isdigit() else None


def _address_space_left() -> int | None:
    """What `ulimit -v` (RLIMIT_AS) leaves: the limit less this process's virtual size."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        status = Path("/proc/self/status").read_text().splitlines()
        used = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    except (OSError, ValueError, StopIteration):
        used = 0
    return soft - used


def available_memory() -> tuple[int, str] | None:
    """The memory a generation may take, and what bounds it; None where nothing says."""
    found = [
        (left, what)
        for left, what in (
            (_meminfo_available(), "available memory (MemAvailable)"),
            (_cgroup_left(), "memory its cgroup's memory.max leaves"),
            (_address_space_left(), "address space its ulimit -v leaves"),
        )
        if left is not None
    ]
    return min(found) if found else None


def check_memory(name: str, needs: tuple[int, int], batch: int, total: int, lengths: str) -> None:
    """Refuse a generation whose estimate (with MEMORY_MARGIN) is over the memory there is."""
    available = available_memory()
    kv, peak = needs
    if available is None or peak * MEMORY_MARGIN <= available[0]:
        return
    left, what = max(available[0], 0), available[1]
    needed = peak * MEMORY_MARGIN  # what onnxruntime's arena makes of the estimate
    fits = math.floor(left / (needed / batch))
    hint = f"batch {fits} fits" if fits >= 1 else f"even batch 1 does not fit: shorten {lengths}"
    raise OnnxoptError(
        f"{name}: batch {batch} x {total} tokens needs about {needed / _GIB:,.1f} GiB "
        f"(KV cache {kv / _GIB:,.1f} GiB), over the {left / _GIB:,.1f} GiB of {what}",
        f"use a smaller --batch or shorter {lengths}; {hint}",
    )


def check_generation(
    ref: ModelRef | ModelInfo,
    model: onnx.ModelProto,
    layout: CacheLayout,
    batch: int,
    prompt: int,
    new_tokens: int,
) -> None:
    """`bench --generate`'s checks: prompt plus new tokens within the positions, then memory."""
    lengths = "--prompt-len plus --new-tokens"
    check_length(ref, model, prompt + new_tokens, lengths)
    total = prompt + new_tokens
    name = ModelInfo.read(ref).ref.name
    check_memory(name, generation_bytes(ref, model, layout, batch, prompt, total), batch, total, lengths)


def disagreements(ref: ModelRef | ModelInfo, layout: CacheLayout) -> list[str]:
    """Where config.json and the graph's cache inputs disagree (layers, KV heads): the likely cause
    when onnxruntime fails mid-generation (a pruned model's heads differ by layer: any one matches)."""
    info, found = ModelInfo.read(ref), []
    try:
        layers = info.config_int(("num_hidden_layers", "n_layer"))
        heads = info.config_int(("num_key_value_heads", "num_attention_heads", "n_head"))
    except OnnxoptError as exc:
        return [exc.message]
    if layers is not None and layers != layout.layers:
        found.append(f"config.json says {layers} layers, the graph caches {layout.layers}")
    if heads is not None and heads not in layout.heads.values():
        found.append(f"config.json says {heads} KV heads, the graph's cache has {max(layout.heads.values())}")
    return found
