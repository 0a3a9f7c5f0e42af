from onnxopt.evaluate.summary import summarize
from tests.conftest import assert_clean_error, cells_text


def test_inspect_fp32_folder(cli, tiny_bert_onnx):
    code, out, err = cli("inspect", tiny_bert_onnx)
    assert code == 0, err
    assert "input_ids: int64[batch_size, sequence_length]" in out
    assert "quantized" in out and "no" in out
    assert "MatMul" in out
    summary = summarize(tiny_bert_onnx)
    assert not summary.quantized and summary.steps == ["export"]
    assert 10_000 < summary.parameters < 200_000
    assert summary.opsets["ai.onnx"] >= 14


def test_inspect_quantized(cli, tiny_bert_dynamic):
    summary = summarize(tiny_bert_dynamic)
    assert summary.quantized and "QAttention" in summary.quantized_ops
    assert summary.int8_weight_share > 0.5
    code, out, _err = cli("inspect", tiny_bert_dynamic, "--nodes")
    assert code == 0 and "yes: " in out and "Nodes" in out


def test_inspect_says_an_int4_model_is_quantized(cli, tiny_gpt2_int4):
    summary = summarize(tiny_gpt2_int4)
    assert summary.quantized and "MatMulNBits" in summary.quantized_ops
    # MatMulNBits packs two int4 weights a byte: counted as weights, not bytes.
    assert summary.int8_weight_share > 0.5
    code, out, err = cli("inspect", tiny_gpt2_int4)
    assert code == 0, err
    assert "yes: MatMulNBits" in cells_text(out)


def test_inspect_text_graph(cli, graph_file):
    path = graph_file("mlp")
    summary = summarize(path)
    assert summary.op_histogram == {"MatMul": 2, "Add": 2, "Relu": 1}
    assert summary.parameters == 4 * 8 + 8 + 8 * 2 + 2
    assert [i.name for i in summary.inputs] == ["x"]
    code, out, _err = cli("inspect", path)
    assert code == 0 and "x: float32[N, 4]" in out


def test_inspect_not_onnx(cli, tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a protobuf, just text\n" * 20)
    code, _out, err = cli("inspect", path)
    assert_clean_error(code, err, "is not a readable ONNX model")


def test_inspect_truncated(cli, tiny_bert_onnx, tmp_path):
    data = (tiny_bert_onnx / "model.onnx").read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 3])
    code, _out, err = cli("inspect", path)
    assert_clean_error(code, err, "is not a readable ONNX model", "truncated")


def test_inspect_missing_and_empty_folder(cli, tmp_path):
    code, _out, err = cli("inspect", tmp_path / "nope")
    assert_clean_error(code, err, "does not exist")
    code, _out, err = cli("inspect", tmp_path)
    assert_clean_error(code, err, "holds no model.onnx")


def test_fp32_kept_groups_by_why(graph_file):
    import onnx

    from onnxopt.evaluate.fp32_kept import fp32_kept

    model = onnx.load(str(graph_file("mlp")))
    for i, node in enumerate(model.graph.node):
        node.name = f"{node.op_type}_{i}"
    first = next(n.name for n in model.graph.node if n.op_type == "MatMul")
    groups = {g.kind: g for g in fp32_kept(model, [{"exclude": [first]}])}
    assert groups["linear weights, excluded"].examples == [first]
    assert groups["linear weights, not quantized"].parameters == 8 * 2
    assert groups["biases and other small tensors"].parameters == 8 + 2


def test_inspect_says_what_stayed_fp32_and_why(cli, tiny_bert_onnx, tmp_path):
    import onnx

    ffn = next(
        n.name
        for n in onnx.load(str(tiny_bert_onnx / "model.onnx"), load_external_data=False).graph.node
        if n.op_type == "MatMul" and "intermediate" in n.name
    )
    code, _out, err = cli("quantize", tiny_bert_onnx, "--dynamic", "--exclude", ffn, "-o", tmp_path / "q")
    assert code == 0, err
    code, out, _err = cli("inspect", tmp_path / "q")
    assert code == 0 and "fp32 kept" in out and "linear weights, excluded" in out
    groups = {g.kind: g for g in summarize(tmp_path / "q").fp32_kept}
    assert groups["linear weights, excluded"].examples == [ffn]
    assert groups["linear weights, excluded"].why == "kept fp32 by --exclude or the --max-drop search"
    assert "norm weights" in groups and "linear weights, not quantized" not in groups  # the rest is int8
