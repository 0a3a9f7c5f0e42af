"""Fuzzing: small valid models mutated byte by byte and field by field. Every case must end in a
result (exit 0) or a clean error (exit 2, one line on stderr, no traceback); anything else, an
exception escaping the CLI or a crash, fails the test.

Derandomized so CI is stable; ONNXOPT_FUZZ_EXAMPLES=5000 (and ONNXOPT_FUZZ_RANDOM=1) explore more.
"""

import contextlib
import io
import os
import tempfile
from pathlib import Path

import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onnxopt.cli.app import main
from onnxopt.io import text_graphs
from tests.conftest import error_lines

EXAMPLES = int(os.environ.get("ONNXOPT_FUZZ_EXAMPLES", "550"))  # per test: two tests, >= 1000 cases
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("ONNXOPT_FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SEEDS = {name: text_graphs.load(name) for name in ("linear", "mlp")}
OP_TYPES = ["MatMul", "Add", "Relu", "Gemm", "Reshape", "Softmax", "Attention", "NoSuchOp", "", "Identity"]


def _run_cli(model_bytes: bytes, quantize: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(model_bytes)
        commands = [
            ["inspect", str(path)],
            [
                "bench",
                str(path),
                "--batch",
                "1",
                "--seq-len",
                "4",
                "--runs",
                "1",
                "--warmup",
                "0",
                "--min-time",
                "0",
            ],
        ]
        if quantize:
            commands.append(["quantize", str(path), "--dynamic", "-o", str(Path(tmp) / "q")])
        for args in commands:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(args)  # an exception escaping here fails the case
            assert code in (0, 2), (args[0], code, err.getvalue())
            if code == 2:
                lines = error_lines(err.getvalue())
                assert len(lines) == 1 and lines[0].startswith("onnxopt: error: "), err.getvalue()
                assert "Traceback" not in err.getvalue()
                assert "internal error" not in err.getvalue(), err.getvalue()  # a bug, however clean
                assert sorted(p.name for p in Path(tmp).iterdir()) == ["model.onnx"]  # nothing left behind


byte_edit = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.integers(1, 64)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
)


@FUZZ
@given(seed=st.sampled_from(sorted(SEEDS)), edits=st.lists(byte_edit, min_size=1, max_size=4))
def test_byte_mutations_end_cleanly(seed, edits):
    data = bytearray(SEEDS[seed].SerializeToString())
    for kind, where, what in edits:
        i = where % max(len(data), 1)
        if kind == "flip" and data:
            data[i] ^= what
        elif kind == "cut":
            del data[i : i + what]
        elif kind == "insert":
            data[i:i] = what
        else:
            del data[i:]
    _run_cli(bytes(data))


def _mutate(model: onnx.ModelProto, kind: str, pick: int, value: int, text: str) -> None:
    graph = model.graph
    node = graph.node[pick % len(graph.node)]
    if kind == "ir_version":
        model.ir_version = value % 20
    elif kind == "opset":
        model.opset_import[0].version = value % 32 - 1
    elif kind == "op_type":
        node.op_type = OP_TYPES[value % len(OP_TYPES)]
    elif kind == "node_input" and node.input:
        node.input[value % len(node.input)] = text
    elif kind == "node_output" and node.output:
        node.output[0] = text
    elif kind == "domain":
        node.domain = text
    elif kind == "drop_initializer" and graph.initializer:
        del graph.initializer[pick % len(graph.initializer)]
    elif kind == "dims" and graph.initializer:
        tensor = graph.initializer[pick % len(graph.initializer)]
        if tensor.dims:
            tensor.dims[value % len(tensor.dims)] = value % 9 - 1
    elif kind == "data_type" and graph.initializer:
        graph.initializer[pick % len(graph.initializer)].data_type = value % 27
    elif kind == "input_type":
        graph.input[0].type.tensor_type.elem_type = value % 27
    elif kind == "input_rank":
        shape = graph.input[0].type.tensor_type.shape
        if value % 2:
            shape.ClearField("dim")
        else:
            shape.dim.add().dim_value = value % 5
    elif kind == "duplicate_node":
        graph.node.append(node)
    elif kind == "drop_node":
        del graph.node[pick % len(graph.node)]
    elif kind == "attribute":
        node.attribute.add(name=text or "x", type=onnx.AttributeProto.INT, i=value)
    elif kind == "drop_output":
        del graph.output[:]


MUTATIONS = [
    "ir_version", "opset", "op_type", "node_input", "node_output", "domain", "drop_initializer", "dims",
    "data_type", "input_type", "input_rank", "duplicate_node", "drop_node", "attribute", "drop_output",
]  # fmt: skip


@FUZZ
@given(
    seed=st.sampled_from(sorted(SEEDS)),
    edits=st.lists(
        st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 50), st.integers(0, 1000), st.text(max_size=6)),
        min_size=1,
        max_size=3,
    ),
)
def test_field_mutations_end_cleanly(seed, edits):
    model = onnx.ModelProto()
    model.CopyFrom(SEEDS[seed])
    for kind, pick, value, text in edits:
        if model.graph.node:
            _mutate(model, kind, pick, value, text)
    _run_cli(model.SerializeToString(), quantize=True)
