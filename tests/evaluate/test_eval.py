import json
import random
import shutil

import pytest

from onnxopt.evaluate.workflow import evaluate
from tests.conftest import assert_clean_error


def test_fidelity_of_a_model_with_itself_is_exact(tiny_bert_onnx):
    result = evaluate(tiny_bert_onnx, reference=tiny_bert_onnx, limit=5, record=False)
    assert result.fidelity.samples == 5
    assert result.fidelity.min_cosine > 0.999999 and result.fidelity.max_abs_diff == 0.0


def test_fidelity_of_int8_is_recorded_in_its_manifest(cli, tiny_bert_onnx, tiny_bert_dynamic, tmp_path):
    model = tmp_path / "dyn"
    shutil.copytree(tiny_bert_dynamic, model)  # the shared fixture's manifest stays as it was
    code, out, err = cli("eval", model, "--reference", tiny_bert_onnx, "--limit", 8)
    assert code == 0, err
    assert "output cosine" in out
    step = json.loads((model / "onnxopt.json").read_text())["steps"][-1]
    assert step["step"] == "eval" and step["fidelity"]["samples"] == 8
    assert 0.98 < step["fidelity"]["mean_cosine"] <= 1.0 + 1e-9
    assert step["fidelity"]["max_abs_diff"] > 0


def _spearman_by_hand(model_dir, pairs_file) -> float:
    """STS Spearman x100 computed here, apart from onnxopt: onnxruntime's outputs mean-pooled over
    the real tokens, cosines, scipy's spearmanr. One batch holds every first sentence and one every
    second, as eval embeds one genre of fewer than 64 pairs."""
    import numpy as np
    import onnxruntime as ort
    from scipy.stats import spearmanr
    from transformers import AutoTokenizer

    rows = [line.split("\t") for line in pairs_file.read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def embed(texts):
        enc = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="np")
        hidden = session.run(None, {k: v.astype(np.int64) for k, v in enc.items() if k in names})[0]
        mask = enc["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    cosines = (embed([r[5] for r in rows]) * embed([r[6] for r in rows])).sum(1)
    return 100 * spearmanr([float(r[4]) for r in rows], cosines).statistic


def test_sts_spearman_and_drop(tiny_bert_onnx, tiny_bert_dynamic, tmp_path):
    data = tmp_path / "pairs.csv"
    data.write_text(_genre_rows("g", 40, 7))  # int8 moves ranks (39.00 vs 39.44 on one VNNI CPU)
    result = evaluate(tiny_bert_dynamic, reference=tiny_bert_onnx, task="sts", data=str(data), record=False)
    assert result.metric_name == "spearman_x100"
    # Ranks of cosines: float rounding that differs here from onnxopt's pooling cannot move them
    # unless two cosines tie to 1e-7, so the figures agree to the last digit.
    want, want_reference = _spearman_by_hand(tiny_bert_dynamic, data), _spearman_by_hand(tiny_bert_onnx, data)
    assert result.metric == pytest.approx(want, abs=1e-9)
    assert result.reference_metric == pytest.approx(want_reference, abs=1e-9)
    assert result.drop == pytest.approx(want_reference - want, abs=1e-9)


def test_eval_errors(cli, tiny_bert_onnx, tmp_path):
    code, _o, err = cli("eval", tiny_bert_onnx, "--task", "bleu")
    assert_clean_error(code, err, "'bleu' is not one of 'fidelity', 'sts'")
    code, _o, err = cli("eval", tiny_bert_onnx)
    assert_clean_error(code, err, "needs a reference model")
    code, _o, err = cli("eval", tiny_bert_onnx, "--task", "sts")
    assert_clean_error(code, err, "--data")
    code, _o, err = cli("eval", tiny_bert_onnx, "--reference", tiny_bert_onnx, "--limit", 0)
    assert_clean_error(code, err, "--limit must be a positive integer, got 0")
    empty = tmp_path / "empty.csv"
    empty.write_text("not\tenough\n")
    code, _o, err = cli("eval", tiny_bert_onnx, "--task", "sts", "--data", empty)
    assert_clean_error(code, err, "holds no STS pairs")


def _genre_rows(genre: str, n: int, seed: int, words_per_sentence: int = 5) -> str:
    words = "man woman dog cat plays runs eats sings red blue car train park food music book".split()
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a = " ".join(rng.choices(words, k=words_per_sentence))
        b = " ".join(rng.choices(words, k=words_per_sentence))
        rows.append(f"main\t{genre}\t2012\t{i}\t{rng.uniform(0, 5):.2f}\t{a}\t{b}\n")
    return "".join(rows)


def test_sts_reports_each_genre_with_enough_pairs(cli, tiny_bert_onnx, tiny_bert_dynamic, tmp_path):
    news, forum, few = _genre_rows("news", 24, 1), _genre_rows("forum", 30, 2), _genre_rows("few", 5, 3)
    data = tmp_path / "pairs.csv"
    data.write_text(news + forum + few)
    result = evaluate(tiny_bert_dynamic, reference=tiny_bert_onnx, task="sts", data=str(data), record=False)
    # "few" has < 20 pairs
    assert set(result.extras) == {"spearman_x100 news", "spearman_x100 forum", "padded-batch min cosine"}
    # A genre's figure is the metric of that genre's pairs on their own.
    alone = tmp_path / "forum.csv"
    alone.write_text(forum)
    only = evaluate(tiny_bert_dynamic, reference=tiny_bert_onnx, task="sts", data=str(alone), record=False)
    assert set(only.extras) == {"padded-batch min cosine"}  # one genre: nothing to break down
    # Exact, on every CPU: each sentence is embedded alone, so the forum pairs are computed the
    # same way here as in their own file. (Dynamic int8 takes one activation scale per padded
    # batch; batched with other genres, this figure was 16.97 against 17.20 alone on an AVX2 CPU.)
    assert result.extras["spearman_x100 forum"] == (only.metric, only.reference_metric)
    assert result.extras["spearman_x100 news"][0] != pytest.approx(result.metric)
    model = tmp_path / "dyn"
    shutil.copytree(tiny_bert_dynamic, model)
    code, out, err = cli("eval", model, "--reference", tiny_bert_onnx, "--task", "sts", "--data", data)
    assert code == 0, err
    assert "spearman_x100 news" in out and "spearman_x100 few" not in out
    step = json.loads((model / "onnxopt.json").read_text())["steps"][-1]
    assert "spearman_x100 forum" in step and "reference_spearman_x100 forum" in step


def test_a_genre_gets_the_same_cosines_alone_or_among_others(tiny_bert_dynamic, tmp_path):
    """The cause of a genre's figure depending on the file: a dynamic int8 model quantizes each
    activation with one scale over the whole padded batch, so a sentence's embedding moved (by up
    to 8.8e-5) with the sentences batched beside it. Each sentence is now embedded alone."""
    import numpy as np

    from onnxopt.data.samples import input_types, load_tokenizer
    from onnxopt.data.sts_pairs import load_sts_pairs
    from onnxopt.evaluate.sts import sts_cosines
    from onnxopt.io import model_files
    from onnxopt.runtime.sessions import make_session

    mixed, alone = tmp_path / "mixed.csv", tmp_path / "alone.csv"
    forum = _genre_rows("forum", 30, 2)
    mixed.write_text(_genre_rows("news", 24, 1, words_per_sentence=12) + forum + _genre_rows("few", 5, 3))
    alone.write_text(forum)
    ref = model_files.resolve(tiny_bert_dynamic)
    args = (
        make_session(ref.onnx_path, "cpu"),
        load_tokenizer(ref.folder),
        input_types(model_files.load(ref)),
    )
    among_others = sts_cosines(*args, load_sts_pairs(mixed))[24:54]
    np.testing.assert_array_equal(among_others, sts_cosines(*args, load_sts_pairs(alone)))  # bit for bit


def test_padding_that_is_no_longer_masked_shows_in_the_padded_batch_check(tiny_bert_onnx, tmp_path):
    """Sentences are scored alone, which cannot see a model that stopped masking padding (the
    static QDQ peer: STS-B dev 84.17 alone, 77.71 in padded batches). The check embeds the first
    sentences both ways; here the model reads 1 - mask, so alone nothing differs (every position
    masked alike) and in a padded batch real tokens attend to the padding."""
    import onnx
    from onnx import helper

    broken = shutil.copytree(tiny_bert_onnx, tmp_path / "unmasked")
    model = onnx.load(str(broken / "model.onnx"))
    for node in model.graph.node:
        node.input[:] = ["flipped_mask" if i == "attention_mask" else i for i in node.input]
    model.graph.initializer.append(helper.make_tensor("one", onnx.TensorProto.INT64, [], [1]))
    model.graph.node.insert(0, helper.make_node("Sub", ["one", "attention_mask"], ["flipped_mask"]))
    # A random tiny BERT's attention adds little to its residual stream (weights of std 0.02), so
    # its projections are scaled up for the padding to show.
    from onnx import numpy_helper

    weights = {n.input[1] for n in model.graph.node if n.op_type == "MatMul"}
    for i, tensor in enumerate(model.graph.initializer):
        if tensor.name in weights and len(tensor.dims) == 2:
            scaled = numpy_helper.from_array(numpy_helper.to_array(tensor) * 20, tensor.name)
            model.graph.initializer[i].CopyFrom(scaled)
    onnx.save(model, str(broken / "model.onnx"))
    data = tmp_path / "pairs.csv"
    data.write_text(
        _genre_rows("g", 30, 4, words_per_sentence=3) + _genre_rows("h", 30, 5, words_per_sentence=14)
    )
    result = evaluate(broken, reference=tiny_bert_onnx, task="sts", data=str(data), record=False)
    value, reference = result.extras["padded-batch min cosine"]
    assert reference > 0.9999 and value < 0.99
