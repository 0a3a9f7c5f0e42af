"""--verify-loading: every output folder loads with optimum's ORTModelFor<Task> and runs."""

import shutil

import numpy as np
import pytest

from tests.conftest import assert_clean_error, build_tiny_bert, export_to


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory, tiny_bert_onnx, tiny_gpt2_onnx):
    root = tmp_path_factory.mktemp("verify")
    found = {"feature-extraction": tiny_bert_onnx, "text-generation": tiny_gpt2_onnx}
    heads = (("classification", "text-classification"), ("qa", "question-answering"), ("mlm", "fill-mask"))
    for head, task in heads:
        hf = build_tiny_bert(root / f"hf-{head}", head=head)
        found[task] = export_to(hf, root / head)
    return found


@pytest.mark.parametrize(
    "task, model_class",
    [
        ("feature-extraction", "ORTModelForFeatureExtraction"),
        ("text-classification", "ORTModelForSequenceClassification"),
        ("question-answering", "ORTModelForQuestionAnswering"),
        ("fill-mask", "ORTModelForMaskedLM"),
        ("text-generation", "ORTModelForCausalLM"),
    ],
)
def test_quantize_verify_loading_per_task(cli, tiny_exports, tmp_path, task, model_class):
    out = tmp_path / "q"
    code, stdout, err = cli("quantize", tiny_exports[task], "--dynamic", "-o", out, "--verify-loading")
    assert code == 0, err
    stdout = " ".join(stdout.split())  # the line wraps at 100 columns (stdout is not a terminal)
    assert f"verified: {model_class}.from_pretrained" in stdout and "min cosine" in stdout
    import optimum.onnxruntime as ort_models

    kwargs = {"use_cache": False, "use_io_binding": False} if task == "text-generation" else {}
    model = getattr(ort_models, model_class).from_pretrained(out, **kwargs)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    encoded = tokenizer(["a dog runs in the park"], return_tensors="pt")
    outputs = model(**encoded)
    main = next(
        getattr(outputs, k) for k in ("last_hidden_state", "logits", "start_logits") if hasattr(outputs, k)
    )
    assert main.shape[0] == 1 and np.isfinite(main.detach().numpy()).all()


def test_verify_compares_with_the_input(tiny_bert_onnx):
    from onnxopt.evaluate.verify import verify_loading

    same = verify_loading(tiny_bert_onnx, tiny_bert_onnx)
    assert same.min_cosine == pytest.approx(1.0) and same.max_abs_diff == 0.0


def test_broken_output_is_refused_and_removed(cli, tiny_bert_onnx, tmp_path, monkeypatch):
    import numpy as np

    from onnxopt.evaluate import verify

    real_run = verify._run

    def scrambled(folder, task, shown):
        ran, tokens = real_run(folder, task, shown)
        if shown.name == "q":  # the output, not the input
            ran.values = np.random.default_rng(0).normal(size=ran.values.shape)
        return ran, tokens

    monkeypatch.setattr(verify, "_run", scrambled)
    out = tmp_path / "q"
    code, _o, err = cli("quantize", tiny_bert_onnx, "--dynamic", "-o", out, "--verify-loading")
    assert_clean_error(code, err, "differs from the input model's")
    assert not out.exists()
    # Verification runs in the staged folder, before the rename: a failure with --overwrite leaves
    # the previous good output exactly as it was (it used to delete both).
    monkeypatch.setattr(verify, "_run", real_run)
    code, _o, err = cli("quantize", tiny_bert_onnx, "--dynamic", "-o", out)
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    monkeypatch.setattr(verify, "_run", scrambled)
    code, _o, err = cli("quantize", tiny_bert_onnx, "--static", "-o", out, "--overwrite", "--verify-loading")
    assert_clean_error(code, err, "differs from the input model's")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]


def test_verify_needs_a_model_folder(cli, graph_file, tmp_path):
    out = tmp_path / "q"
    code, _o, err = cli("quantize", graph_file("linear"), "--dynamic", "-o", out, "--verify-loading")
    assert_clean_error(code, err, "--verify-loading needs a model folder with config.json")
    assert not out.exists()


def test_optimum_without_tokenizer_files(cli, tiny_bert_onnx, tmp_path):
    folder = shutil.copytree(tiny_bert_onnx, tmp_path / "bare")
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    from onnxopt.evaluate.verify import verify_loading

    with pytest.raises(Exception, match="from_pretrained"):
        verify_loading(folder)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A tiny Llama (hidden 64) exported with its cache, as `onnxopt export` writes it."""
    from tests.prune.test_prune_decoders import build_tiny_decoder

    root = tmp_path_factory.mktemp("verify-llama")
    return export_to(build_tiny_decoder("llama", root / "hf", hidden=64), root / "onnx")


def test_masked_lm_logits_and_top1_match_the_input(tiny_exports):
    from onnxopt.evaluate.verify import verify_loading

    result = verify_loading(tiny_exports["fill-mask"], tiny_exports["fill-mask"])
    assert result.model_class == "ORTModelForMaskedLM" and result.output == "logits"
    assert result.shape[-1] > 50  # logits over the vocabulary, not hidden states
    assert result.top1_agreement == 1.0 and result.min_cosine == pytest.approx(1.0)
    assert result.generated is None and result.greedy_agreement is None


def test_a_decoder_with_past_generates_through_optimum(cli, tiny_llama, tmp_path):
    out = tmp_path / "q"
    code, stdout, err = cli(
        "quantize", tiny_llama, "--dynamic", "-o", out, "--verify-loading", "--json", tmp_path / "r.json"
    )
    assert code == 0, err
    stdout = " ".join(stdout.split())  # the line wraps at 100 columns (stdout is not a terminal)
    assert "verified: ORTModelForCausalLM.from_pretrained" in stdout
    assert "generate() wrote 64 greedy tokens" in stdout  # 4 prompts x 16 tokens
    import json

    verified = json.loads((tmp_path / "r.json").read_text())["verified"]
    assert verified["generated"] == 64 and 0.5 <= verified["greedy_agreement"] <= 1.0
    assert verified["top1_agreement"] > 0.9
    # optimum loaded it with its cache: the loaded model reads past_key_values.
    import optimum.onnxruntime as ort_models

    model = ort_models.ORTModelForCausalLM.from_pretrained(out, use_cache=True, use_io_binding=False)
    assert model.use_cache and any(n.startswith("past_key_values.") for n in model.input_names)


def test_a_decoder_that_no_longer_generates_as_its_input_is_refused(cli, tiny_llama, tmp_path, monkeypatch):
    from onnxopt.evaluate import verify_models

    real_greedy = verify_models.greedy

    def shifted(loaded, shown):
        tokens = real_greedy(loaded, shown)
        return [t + 1 for t in tokens] if shown.name == "q" else tokens  # the output only

    monkeypatch.setattr(verify_models, "greedy", shifted)
    out = tmp_path / "q"
    code, _o, err = cli("quantize", tiny_llama, "--dynamic", "-o", out, "--verify-loading")
    assert_clean_error(code, err, "generate()'s first token equals the input model's on 0 of 4 prompts only")
    assert not out.exists()
