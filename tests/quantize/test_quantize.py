import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxopt.quantize.workflow import quantize
from tests.conftest import assert_clean_error, error_lines


def _run(folder, ids):
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return session.run(None, feed)[0]


def _cosine(a, b):
    a, b = a.ravel(), b.ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


IDS = np.array([[2, 10, 20, 30, 40, 50, 3], [2, 11, 21, 31, 41, 51, 3]], dtype=np.int64)


def test_dynamic_quantizes_matmuls_and_attention(tiny_bert_onnx, tiny_bert_dynamic):
    ops = {n.op_type for n in onnx.load(str(tiny_bert_dynamic / "model.onnx")).graph.node}
    assert {"QAttention", "DynamicQuantizeMatMul"} <= ops
    assert _cosine(_run(tiny_bert_onnx, IDS), _run(tiny_bert_dynamic, IDS)) > 0.99
    manifest = json.loads((tiny_bert_dynamic / "onnxopt.json").read_text())
    assert [s["step"] for s in manifest["steps"]] == ["export", "quantize-dynamic"]
    assert (tiny_bert_dynamic / "tokenizer.json").is_file()


def test_static_with_embedded_corpus(cli, tiny_bert_onnx, tmp_path):
    out = tmp_path / "int8"
    code, stdout, err = cli("quantize", tiny_bert_onnx, "--static", "--calib", 12, "-o", out)
    assert code == 0, err
    assert "calibrate" in stdout and "12 samples" in stdout
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "MatMulIntegerToFloat", "QAttention"} <= ops
    assert not ops & {"DequantizeLinear", "SkipLayerNormalization", "BiasGelu"}  # the CPU layout
    assert _cosine(_run(tiny_bert_onnx, IDS), _run(out, IDS)) > 0.98
    step = json.loads((out / "onnxopt.json").read_text())["steps"][-1]
    assert step["step"] == "quantize-static"
    assert step["calibration"]["samples"] == 12
    assert step["calibration"]["data"].startswith("embedded corpus")


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_static_histogram_methods(tiny_bert_onnx, tmp_path, method):
    result = quantize(tiny_bert_onnx, tmp_path / "q", mode="static", calib=6, method=method)
    assert result.calibration.samples == 6
    assert _cosine(_run(tiny_bert_onnx, IDS), _run(tmp_path / "q", IDS)) > 0.95


def test_static_from_csv_pairs_and_options(tiny_bert_onnx, tmp_path):
    data = tmp_path / "pairs.tsv"
    data.write_text(
        "g\tf\t2012\t1\t4.0\ta man plays music\ta woman plays music\n"
        "g\tf\t2012\t2\t1.0\tthe cat sits\tthe train is new\n"
    )
    result = quantize(
        tiny_bert_onnx,
        tmp_path / "q",
        mode="static",
        calib=5,
        calib_data=str(data),
        text_column="5,6",
        per_channel=False,
        ops=("MatMul",),
        optimize=False,
    )
    assert result.calibration.samples == 2  # the file holds two pairs; --calib is an upper bound
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q" / "model.onnx")).graph.node}
    assert "Attention" not in ops and "QAttention" not in ops  # --no-optimize keeps the graph unfused
    assert result.options["options"]["per_channel"] is False  # the options as given, beside the plan


def test_exclude_keeps_node_in_float(tiny_bert_onnx, tmp_path):
    first = quantize(tiny_bert_onnx, tmp_path / "a", mode="dynamic")
    fused_matmuls = [s for s in first.steps if s.name == "quantize-dynamic"]
    assert fused_matmuls
    model = onnx.load(str(tmp_path / "a" / "model.onnx"))
    assert not any(n.op_type == "MatMul" for n in model.graph.node)
    # Pick the name of a MatMul in the fused graph (names survive fusion) and keep it in fp32.
    name = next(
        n.name
        for n in onnx.load(str(tiny_bert_onnx / "model.onnx")).graph.node
        if n.op_type == "MatMul" and "intermediate" in n.name
    )
    quantize(tiny_bert_onnx, tmp_path / "b", mode="dynamic", exclude=(name,))
    kept = [n for n in onnx.load(str(tmp_path / "b" / "model.onnx")).graph.node if n.name == name]
    assert kept and kept[0].op_type == "MatMul"


def test_bare_onnx_file_quantizes_dynamic(cli, graph_file, tmp_path):
    code, _out, err = cli("quantize", graph_file("mlp"), "--dynamic", "-o", tmp_path / "q")
    assert code == 0, err
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q" / "model.onnx")).graph.node}
    assert "DynamicQuantizeMatMul" in ops


def test_needs_exactly_one_mode(cli, tiny_bert_onnx, tmp_path):
    code, _out, err = cli("quantize", tiny_bert_onnx, "-o", tmp_path / "q")
    assert_clean_error(code, err, "--static", "--dynamic")
    code, _out, err = cli("quantize", tiny_bert_onnx, "--static", "--dynamic", "-o", tmp_path / "q")
    assert_clean_error(code, err, "exactly one")
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--method", "median"], "'median' is not one of 'minmax', 'entropy', 'percentile'"),
        (["--ops", "Conv"], "--ops takes values among MatMul, Gemm, Attention"),
        (["--calib", "0"], "--calib must be a positive integer, got 0"),
        (["--seq-len", "0"], "--seq-len must be a positive integer, got 0"),
        (["--exclude", "no_such_node"], "does not have"),
    ],
)
def test_bad_option_values(cli, tiny_bert_onnx, tmp_path, args, fragment):
    code, _out, err = cli("quantize", tiny_bert_onnx, "--static", "-o", tmp_path / "q", *args)
    assert_clean_error(code, err, fragment)
    assert list(tmp_path.iterdir()) == []


def test_empty_calibration_file(cli, tiny_bert_onnx, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    code, _out, err = cli("quantize", tiny_bert_onnx, "--static", "--calib-data", empty, "-o", tmp_path / "q")
    assert_clean_error(code, err, "holds no samples")
    assert not (tmp_path / "q").exists()


def test_missing_calibration_file(cli, tiny_bert_onnx, tmp_path):
    code, _out, err = cli(
        "quantize", tiny_bert_onnx, "--static", "--calib-data", tmp_path / "nope.txt", "-o", tmp_path / "q"
    )
    assert_clean_error(code, err, "does not exist")


def test_static_needs_a_tokenizer(cli, graph_file, tmp_path):
    code, _out, err = cli("quantize", graph_file("linear"), "--static", "-o", tmp_path / "q")
    assert_clean_error(code, err, "tokenizer")
    assert not (tmp_path / "q").exists()


def test_folder_without_tokenizer_files(cli, tiny_bert_onnx, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.onnx").write_bytes((tiny_bert_onnx / "model.onnx").read_bytes())
    code, _out, err = cli("quantize", bare, "--static", "-o", tmp_path / "q")
    assert_clean_error(code, err, "tokenizer")


def test_refuses_already_quantized(cli, tiny_bert_dynamic, tmp_path):
    code, _out, err = cli("quantize", tiny_bert_dynamic, "--dynamic", "-o", tmp_path / "q")
    assert_clean_error(code, err, "already quantized")


def test_never_overwrites_input_or_existing_output(cli, tiny_bert_onnx, tmp_path):
    before = (tiny_bert_onnx / "model.onnx").stat().st_mtime_ns
    code, _out, err = cli("quantize", tiny_bert_onnx, "--dynamic", "-o", tiny_bert_onnx, "--overwrite")
    assert_clean_error(code, err, "would overwrite the input")
    assert (tiny_bert_onnx / "model.onnx").stat().st_mtime_ns == before
    (tmp_path / "q").mkdir()
    code, _out, err = cli("quantize", tiny_bert_onnx, "--dynamic", "-o", tmp_path / "q")
    assert_clean_error(code, err, "already exists")


def test_overwrite_replaces_an_earlier_output(cli, tiny_bert_onnx, tmp_path):
    out = tmp_path / "q"
    code, _out, err = cli("quantize", tiny_bert_onnx, "--dynamic", "-o", out)
    assert code == 0, err
    # A file its manifest lists is onnxopt's to replace (one it does not list: tests/cli/test_hostile_cli.py).
    (out / "vocab.txt").write_text("old")
    code, _out, err = cli("quantize", tiny_bert_onnx, "--dynamic", "-o", out, "--overwrite")
    assert code == 0, err
    assert (out / "vocab.txt").read_bytes() == (tiny_bert_onnx / "vocab.txt").read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["q"]  # no temporary folders or lock left beside it


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_onnxruntime_shape_inference_failure_does_not_reach_the_user(
    tiny_bert_onnx, tmp_path, monkeypatch, mode
):
    """Symbolic inference failing the way it does in quant_pre_process on optimum exports is survived:
    ONNX inference takes over and untyped contrib-op tensors are declared float to the quantizer."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    def fail(*_args, **_kwargs):
        raise Exception("Incomplete symbolic shape inference")

    monkeypatch.setattr(SymbolicShapeInference, "infer_shapes", staticmethod(fail))
    result = quantize(tiny_bert_onnx, tmp_path / "q", mode=mode, calib=4)
    (shapes,) = [s for s in result.steps if s.name == "infer-shapes"]
    assert shapes.details["method"] == "onnx"
    assert "Incomplete symbolic shape inference" in shapes.details["fallback_reason"]
    assert _cosine(_run(tiny_bert_onnx, IDS), _run(tmp_path / "q", IDS)) > 0.98


def test_gelu_fed_matmuls_get_dynamic_scales_only_with_dynamic_gelu(tiny_bert_onnx, tmp_path):
    hybrid = quantize(tiny_bert_onnx, tmp_path / "h", mode="static", calib=4, dynamic_gelu=True)
    assert hybrid.options["dynamic_matmuls"] == [
        "/encoder/layer.0/output/dense/MatMul",
        "/encoder/layer.1/output/dense/MatMul",
    ]
    ops = [n.op_type for n in onnx.load(str(tmp_path / "h" / "model.onnx")).graph.node]
    assert ops.count("DynamicQuantizeMatMul") == 2 and "QuantizeLinear" in ops
    static = quantize(tiny_bert_onnx, tmp_path / "s", mode="static", calib=4)
    assert static.options["dynamic_matmuls"] == []
    ops = [n.op_type for n in onnx.load(str(tmp_path / "s" / "model.onnx")).graph.node]
    assert "DynamicQuantizeMatMul" not in ops and ops.count("MatMulIntegerToFloat") == 6
    qdq = quantize(tiny_bert_onnx, tmp_path / "qdq", mode="static", calib=4, qdq=True)
    assert qdq.options["dynamic_matmuls"] == hybrid.options["dynamic_matmuls"]  # --qdq: on by default
    qdq = quantize(tiny_bert_onnx, tmp_path / "qdq-s", mode="static", calib=4, qdq=True, dynamic_gelu=False)
    assert qdq.options["dynamic_matmuls"] == []


def test_dynamic_gelu_is_a_flag_of_quantize(cli, tiny_bert_onnx, tmp_path):
    code, _out, err = cli(
        "quantize", tiny_bert_onnx, "--static", "--calib", "4", "--dynamic-gelu", "-o", tmp_path / "q"
    )
    assert code == 0, err
    (step,) = json.loads((tmp_path / "q" / "onnxopt.json").read_text())["steps"][-1:]
    assert step["dynamic_matmuls"] == [
        "/encoder/layer.0/output/dense/MatMul",
        "/encoder/layer.1/output/dense/MatMul",
    ]


def test_ctrl_c_mid_run_exits_130_and_leaves_nothing(cli, tiny_bert_onnx, tmp_path, monkeypatch):
    import onnxopt.quantize.workflow as quantization_module

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    # inside the staged write
    monkeypatch.setattr(quantization_module.model_files, "copy_sidecars", interrupted)
    code, _out, err = cli("quantize", tiny_bert_onnx, "--dynamic", "-o", tmp_path / "q")
    assert code == 130
    assert error_lines(err) == ["onnxopt: error: interrupted; nothing was written"]
    assert list(tmp_path.iterdir()) == []


def test_qdq_keeps_the_qdq_form(cli, tiny_bert_onnx, tmp_path):
    out = tmp_path / "qdq"
    code, stdout, err = cli("quantize", tiny_bert_onnx, "--static", "--calib", 4, "--qdq", "-o", out)
    assert code == 0, err
    assert "QDQ on onnxruntime's fused graph" in " ".join(stdout.split())
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert "DequantizeLinear" in ops and "MatMulIntegerToFloat" not in ops
    assert json.loads((out / "onnxopt.json").read_text())["steps"][-1]["layout"] == "qdq"
    assert _cosine(_run(tiny_bert_onnx, IDS), _run(out, IDS)) > 0.98
    default = quantize(tiny_bert_onnx, tmp_path / "cpu", mode="static", calib=4)
    assert default.options["layout"] == "onnxruntime-cpu"


@pytest.mark.parametrize("target", ["openvino", "portable"])
def test_targets_other_than_cpu_write_qdq_of_plain_ops(cli, tiny_bert_onnx, tmp_path, target):
    out = tmp_path / target
    code, stdout, err = cli(
        "quantize", tiny_bert_onnx, "--static", "--calib", 4, "--target", target, "-o", out
    )
    assert code == 0, err
    graph = onnx.load(str(out / "model.onnx")).graph
    assert not [n.op_type for n in graph.node if n.domain == "com.microsoft"]
    assert "DynamicQuantizeLinear" not in {n.op_type for n in graph.node}  # static throughout
    producers = {o: n.op_type for n in graph.node for o in n.output}
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    fed_by_dq = [all(producers.get(i) == "DequantizeLinear" for i in n.input) for n in matmuls]
    # Attention core: MatMuls of two computed tensors (neither input a weight's DequantizeLinear).
    weights = {t.name for t in graph.initializer}
    dq_of_weight = {
        n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights
    }
    core = [n for n in matmuls if not set(n.input) & dq_of_weight]
    assert core and all(fed_by_dq[i] for i, n in enumerate(matmuls) if n not in core)
    # OpenVINO: the attention core (QK^T and probabilities x V) left fp32, activations signed
    # int8, smoothing as a Mul on the quantized branch; portable: every MatMul quantized, uint8.
    reads_softmax = [n for n in core if producers.get(n.input[0]) == "Softmax"]
    quantized_core = [n for n in core if all(producers.get(i) == "DequantizeLinear" for i in n.input)]
    q_nodes = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in weights]
    zero_types = {next(t for t in graph.initializer if t.name == q.input[2]).data_type for q in q_nodes}
    if target == "openvino":
        assert reads_softmax and not quantized_core
        assert zero_types == {onnx.TensorProto.INT8}
        assert "LayerNormalization" not in {producers.get(q.input[0]) for q in q_nodes}
        assert "Mul" in {producers.get(q.input[0]) for q in q_nodes}
    else:
        assert quantized_core == core
        assert zero_types == {onnx.TensorProto.UINT8}
    # No QDQ pair on a MatMul's own output: each MatMul's output goes straight to its bias Add.
    assert "MatMul" not in {producers.get(n.input[0]) for n in graph.node if n.op_type == "QuantizeLinear"}
    # Only int8 readers read a fake-quantized activation: the residual branch reads the tensor.
    dq_of_activation = {
        n.output[0]
        for n in graph.node
        if n.op_type == "DequantizeLinear" and producers.get(n.input[0]) == "QuantizeLinear"
    }
    readers = {n.op_type for n in graph.node if set(n.input) & dq_of_activation}
    assert readers and readers <= {"MatMul", "Gather"}, readers
    step = json.loads((out / "onnxopt.json").read_text())["steps"][-1]
    assert step["target"] == target and step["layout"].startswith(f"qdq for {target}")
    assert _cosine(_run(tiny_bert_onnx, IDS), _run(out, IDS)) > 0.98


def test_int4_refuses_a_target(cli, tiny_bert_onnx, tmp_path):
    code, _out, err = cli("quantize", tiny_bert_onnx, "--int4", "--target", "openvino", "-o", tmp_path / "q")
    assert_clean_error(code, err, "--target openvino is for int8")
