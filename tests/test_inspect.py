from onnxopt.evaluate.summary import summarize
from tests.conftest import assert_clean_error


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
