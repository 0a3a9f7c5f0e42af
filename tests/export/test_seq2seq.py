"""Encoder-decoders (T5, BART) end to end: tiny random-weight models built in code, exported in
three parts with their cache, checked by greedy generation against PyTorch, quantized part by
part, timed generating, evaluated and loaded by optimum's ORTModelForSeq2SeqLM; the commands that
take one graph only say so in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxopt.io.parts import SEQ2SEQ_FILES
from tests.conftest import _WORDS, assert_clean_error, cells_text

KINDS = ("t5", "bart")
_PARTS = {"encoder": SEQ2SEQ_FILES[0], "decoder": SEQ2SEQ_FILES[1], "decoder_with_past": SEQ2SEQ_FILES[2]}


def build_tiny_seq2seq(kind: str, folder: Path) -> Path:
    """A random-weight T5 or BART (d_model 64, 2+2 layers, 4 heads of 16, FFN 128) with a
    word-level tokenizer over the test vocabulary that ends each text with </s>."""
    import torch
    import transformers as hf
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<pad>", "</s>", "<unk>"] if kind == "t5" else ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = {w: i for i, w in enumerate([*specials, *sorted(set(_WORDS))])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    special = dict(unk_token="<unk>", eos_token="</s>", pad_token="<pad>")
    if kind == "bart":
        special["bos_token"] = "<s>"
    hf.PreTrainedTokenizerFast(tokenizer_object=core, **special).save_pretrained(folder)
    torch.manual_seed(0)
    if kind == "t5":
        config = hf.T5Config(
            vocab_size=len(vocab), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
            num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )  # fmt: skip
        model = hf.T5ForConditionalGeneration(config)
    else:
        config = hf.BartConfig(
            vocab_size=len(vocab), d_model=64, encoder_layers=2, decoder_layers=2,
            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
            decoder_ffn_dim=128, max_position_embeddings=128, bos_token_id=0, pad_token_id=1,
            eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None,
        )  # fmt: skip
        model = hf.BartForConditionalGeneration(config)
    model.eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """Each kind exported once by `onnxopt export` (the test below checks what it wrote)."""
    from onnxopt.export.workflow import export

    root = tmp_path_factory.mktemp("seq2seq")
    found = {}
    for kind in KINDS:
        hf = build_tiny_seq2seq(kind, root / f"hf-{kind}")
        found[kind] = root / kind
        found[f"{kind}-result"] = export(str(hf), root / kind)
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_export_keeps_three_parts_and_generates_as_pytorch(exported, kind):
    folder, result = exported[kind], exported[f"{kind}-result"]
    assert result.task == "text2text-generation-with-past"
    for name in SEQ2SEQ_FILES:
        onnx.checker.check_model(str(folder / name))
    assert not (folder / "decoder_model_merged.onnx").exists()  # not merged: no If node to quantize
    manifest = json.loads((folder / "onnxopt.json").read_text())
    assert manifest["parts"] == _PARTS
    # The first step's logits match PyTorch, and greedy generation through the parts equals
    # generate(), every token of 8 prompts x 32.
    assert result.max_abs_diff["logits"] < 1e-4
    assert "256/256 tokens equal PyTorch's" in result.notes[0]
    assert result.size_bytes == sum((folder / name).stat().st_size for name in SEQ2SEQ_FILES)
    with_past = onnx.load(str(folder / SEQ2SEQ_FILES[2]), load_external_data=False)
    names = {i.name for i in with_past.graph.input}
    assert {"past_key_values.0.decoder.key", "past_key_values.0.encoder.key"} <= names


def test_the_runner_steps_through_the_cache_as_a_full_decode(exported):
    """Greedy through decoder_with_past equals rerunning the first-step decoder on the whole prefix."""
    import onnxruntime as ort

    from onnxopt.runtime.seq2seq import Seq2Seq

    folder = exported["bart"]
    runner = Seq2Seq.load(folder)
    ids = np.array([[5, 9, 30, 41, 2]])
    tokens = runner.greedy(ids, 6)
    full = ort.InferenceSession(str(folder / SEQ2SEQ_FILES[1]), providers=["CPUExecutionProvider"])
    hidden = runner.sessions["encoder"].run(None, runner.encoder_feed(ids))[0]
    prefix = np.array([[runner.start_token, *tokens[0, :-1]]])
    mask = np.ones(ids.shape, np.int64)
    logits = full.run(
        ["logits"], {"input_ids": prefix, "encoder_hidden_states": hidden, "encoder_attention_mask": mask}
    )[0]
    assert list(runner.next_token(logits)) == [tokens[0, -1]]
    steps = [part for part, _feed in runner.recorded_feeds(ids, 6)]
    assert steps == ["encoder", "decoder"] + ["decoder_with_past"] * 5


def test_one_graph_commands_refuse_a_folder_in_parts(cli, exported, tmp_path):
    folder = exported["t5"]
    for args in (
        ("prune", folder, "--sparsity", "0.5", "-o", tmp_path / "p"),
        ("optimize", folder, "-o", tmp_path / "o"),
    ):
        code, _o, err = cli(*args)
        assert_clean_error(code, err, "is an encoder-decoder in 3 parts", "works on one-graph models only")
    code, _o, err = cli("bench", folder)
    assert_clean_error(code, err, "is an encoder-decoder in 3 parts")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_manifest_naming_a_missing_part_is_refused(cli, exported, tmp_path):
    folder = shutil.copytree(exported["t5"], tmp_path / "t5")
    (folder / SEQ2SEQ_FILES[2]).unlink()
    code, _o, err = cli("eval", folder, "--task", "generation", "--reference", exported["t5"])
    assert_clean_error(code, err, "part 'decoder_with_past' (decoder_with_past_model.onnx) is not a file")


@pytest.fixture(scope="module")
def quantized(exported, tmp_path_factory) -> dict[str, Path]:
    """Each kind quantized --dynamic through the command, with --verify-loading."""
    from onnxopt.cli.app import main

    root = tmp_path_factory.mktemp("seq2seq-q")
    found = {}
    for kind in KINDS:
        found[kind] = root / kind
        assert (
            main(["quantize", str(exported[kind]), "--dynamic", "-o", str(found[kind]), "--verify-loading"])
            == 0
        )
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_dynamic_quantization_reaches_every_part(exported, quantized, kind):
    from onnxopt.runtime.seq2seq import Seq2Seq

    folder = quantized[kind]
    manifest = json.loads((folder / "onnxopt.json").read_text())
    assert manifest["parts"] == _PARTS
    step = manifest["steps"][-1]
    assert step["step"] == "quantize-dynamic"
    for part in _PARTS:  # every part's matmuls became int8 kernels
        ops = step["parts"][part]["int8_ops"]
        assert ops.get("DynamicQuantizeMatMul", 0) + ops.get("MatMulInteger", 0) >= 6, (part, ops)
    before = sum((exported[kind] / f).stat().st_size for f in SEQ2SEQ_FILES)
    after = sum((folder / f).stat().st_size for f in SEQ2SEQ_FILES)
    assert after < 0.6 * before
    ids = np.array([[5, 9, 30, 41, 8, 12, 1]])
    same = Seq2Seq.load(folder).greedy(ids, 16) == Seq2Seq.load(exported[kind]).greedy(ids, 16)
    assert same.mean() >= 0.5


def test_static_calibration_is_fed_from_a_generation_loop(exported, tmp_path):
    from onnxopt.quantize.entry import quantize_model

    result = quantize_model(exported["bart"], tmp_path / "s", mode="static", calib=3)
    calibration = result.options["calibration"]
    # Each text: the encoder once, the first step once, then 7 steps through the cache.
    assert calibration["feeds"] == {"encoder": 3, "decoder": 3, "decoder_with_past": 21}
    ops = result.options["parts"]["decoder_with_past"]["int8_ops"]
    assert ops.get("MatMulIntegerToFloat", 0) >= 6 and ops.get("QuantizeLinear", 0) > 0


def test_int4_packs_every_part(exported, tmp_path):
    from onnxopt.quantize.entry import quantize_model

    quantize_model(exported["t5"], tmp_path / "w", mode="int4")
    for name in SEQ2SEQ_FILES:
        ops = {n.op_type for n in onnx.load(str(tmp_path / "w" / name)).graph.node}
        assert "MatMulNBits" in ops, name


def test_quantize_options_a_folder_in_parts_cannot_take_are_refused(cli, exported, tmp_path):
    code, _o, err = cli("quantize", exported["t5"], "--static", "--max-drop", "1", "-o", tmp_path / "q")
    assert_clean_error(code, err, "--max-drop does not work on an encoder-decoder in parts")
    assert not (tmp_path / "q").exists()
    code, _o, err = cli("quantize", exported["t5"], "--dynamic", "--target", "auto", "-o", tmp_path / "q")
    assert_clean_error(code, err, "--target auto does not work on an encoder-decoder in parts")


def test_a_quantized_folder_in_parts_is_not_quantized_again(cli, quantized, tmp_path):
    code, _o, err = cli("quantize", quantized["bart"], "--dynamic", "-o", tmp_path / "q")
    assert_clean_error(code, err, "encoder_model.onnx is already quantized")


def test_bench_generate_times_an_encoder_decoder(cli, exported, quantized, tmp_path):
    report = tmp_path / "bench.json"
    args = ("--generate", "--batch", "1", "--prompt-len", "8", "--new-tokens", "8", "--runs", "3")
    code, stdout, err = cli(
        "bench", exported["t5"], quantized["t5"], *args, "--min-time", "0", "--json", report
    )
    assert code == 0, err
    assert "TTFT ms" in stdout
    rows = json.loads(report.read_text())["generation"]
    assert [Path(r["model"]).name for r in rows] == ["t5", "t5"]
    for row in rows:
        assert row["ttft_ms"] > 0 and row["tpot_p50_ms"] > 0 and row["new_tokens"] == 8
        assert row["tokens_per_s"] == pytest.approx(1000 / row["tpot_p50_ms"])
        assert 50 < row["rss_mb"] < 4000  # a fresh process serving the three parts, Python included
    assert rows[1]["size_bytes"] < 0.6 * rows[0]["size_bytes"]
    assert rows[0]["speedup"] == 1.0


def test_bench_generate_does_not_mix_decoders_and_encoder_decoders(cli, exported, tiny_gpt2_onnx):
    code, _o, err = cli("bench", exported["t5"], tiny_gpt2_onnx, "--generate")
    assert_clean_error(code, err, "compares encoder-decoders with encoder-decoders", "is not one")


@pytest.mark.parametrize("kind", KINDS)
def test_eval_generation_and_fidelity_against_the_fp32_parts(cli, exported, quantized, kind, tmp_path):
    model = shutil.copytree(quantized[kind], tmp_path / "q")
    report = tmp_path / "eval.json"
    code, _o, err = cli(
        "eval", model, "--task", "generation", "--reference", exported[kind], "--limit", "4",
        "--new-tokens", "8", "--json", report,
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(report.read_text())
    assert result["metric_name"] == "greedy_agreement_x100" and 50 <= result["metric"] <= 100
    code, _o, err = cli(
        "eval", model, "--task", "fidelity", "--reference", exported[kind], "--limit", "3", "--json", report
    )
    assert code == 0, err
    fidelity = json.loads(report.read_text())["fidelity"]
    assert fidelity["samples"] == 3 * 9  # per text: the encoder, the first step, 7 steps through the cache
    assert 0.99 < fidelity["min_cosine"] < 1.0  # int8 changed the outputs a little, not much
    steps = json.loads((model / "onnxopt.json").read_text())["steps"]
    assert [s["step"] for s in steps][-2:] == ["eval", "eval"]


def test_eval_fidelity_sees_a_changed_part(cli, exported, tmp_path):
    """Fidelity reads every part, not only the encoder: with the rows of the decoder with past's
    projections shuffled, its steps' logits turn away from the reference's; the other parts stay."""
    from onnx import numpy_helper

    model = shutil.copytree(exported["bart"], tmp_path / "m")
    graph = onnx.load(str(model / SEQ2SEQ_FILES[2]))
    rng = np.random.default_rng(0)
    for tensor in graph.graph.initializer:
        values = numpy_helper.to_array(tensor)
        if values.ndim == 2 and tensor.name.startswith("onnx::MatMul"):  # projections, not embeddings
            tensor.CopyFrom(numpy_helper.from_array(rng.permutation(values), tensor.name))
    onnx.save(graph, str(model / SEQ2SEQ_FILES[2]))
    report = tmp_path / "e.json"
    args = ("--task", "fidelity", "--reference", exported["bart"], "--limit", "2", "--json", report)
    code, _o, err = cli("eval", model, *args)
    assert code == 0, err
    fidelity = json.loads(report.read_text())["fidelity"]
    assert fidelity["min_cosine"] < 0.9 and fidelity["mean_cosine"] > fidelity["min_cosine"]


def test_eval_tasks_a_folder_in_parts_cannot_take_are_refused(cli, exported, tiny_gpt2_onnx, tmp_path):
    model = shutil.copytree(exported["t5"], tmp_path / "m")
    code, _o, err = cli("eval", model, "--task", "perplexity", "--data", tmp_path / "none.txt")
    assert_clean_error(code, err, "eval --task perplexity does not work on an encoder-decoder in parts")
    code, _o, err = cli("eval", model, "--task", "generation", "--reference", tiny_gpt2_onnx)
    assert_clean_error(code, err, "is an encoder-decoder in parts; its reference", "is not")


def test_verify_loading_generates_through_optimum_seq2seq(exported, quantized, tmp_path):
    from onnxopt.evaluate.verify import verify_loading

    result = verify_loading(quantized["t5"], exported["t5"])
    assert result.model_class == "ORTModelForSeq2SeqLM" and result.output == "logits"
    assert result.generated == 64 and result.greedy_agreement >= 0.5 and result.min_cosine > 0.99
    broken = shutil.copytree(quantized["t5"], tmp_path / "broken")
    shutil.copyfile(broken / SEQ2SEQ_FILES[1], broken / SEQ2SEQ_FILES[2])  # no past inputs any more
    from onnxopt.errors import OnnxoptError

    with pytest.raises(OnnxoptError, match="ORTModelForSeq2SeqLM loaded .* but failed on a sample"):
        verify_loading(broken, exported["t5"])


def test_a_recipe_exports_quantizes_evaluates_and_benches_an_encoder_decoder(cli, tmp_path):
    hf = build_tiny_seq2seq("t5", tmp_path / "hf")
    (tmp_path / "prompts.txt").write_text("the cat sits on a mat .\na dog runs in the park .\n")
    recipe = tmp_path / "t5.yaml"
    recipe.write_text(
        "name: t5-dynamic-int8\n"
        "steps:\n"
        "  - export: {}\n"
        "  - quantize: {dynamic: true, verify_loading: true}\n"
        "  - eval: {name: agreement, task: generation, data: prompts.txt, new_tokens: 8,\n"
        "           input: 2-quantize, reference: 1-export}\n"
        "  - bench: {generate: true, batch: [1], prompt_len: 8, new_tokens: 4, runs: 2, min_time: 0}\n"
    )
    out = tmp_path / "out"
    code, stdout, err = cli("run", recipe, "--model", hf, "-o", out)
    assert code == 0, err
    assert "loads as ORTModelForSeq2SeqLM" in stdout
    assert all((out / "2-quantize" / name).is_file() for name in SEQ2SEQ_FILES)
    state = json.loads((out / "recipe-state.json").read_text())["steps"]
    assert state["agreement"]["result"]["metric"] == "greedy_agreement_x100"
    code, stdout, err = cli("run", recipe, "--model", hf, "-o", out)
    assert code == 0, err
    assert cells_text(stdout).count("(unchanged: skipped)") == 4, stdout  # the parts' hashes are stable


def test_a_manifest_whose_parts_are_not_file_names_is_damaged(cli, exported, tmp_path):
    folder = shutil.copytree(exported["bart"], tmp_path / "m")
    manifest = json.loads((folder / "onnxopt.json").read_text())
    manifest["parts"] = {"encoder": 3, "decoder": "decoder_model.onnx", "decoder_with_past": "x"}
    (folder / "onnxopt.json").write_text(json.dumps(manifest))
    code, _o, err = cli("eval", folder, "--task", "generation", "--reference", exported["bart"])
    assert_clean_error(code, err, "onnxopt.json is damaged (parts holds a value that is not a file name)")
    manifest["parts"] = {"encoder": "../encoder_model.onnx", "decoder": "d", "decoder_with_past": "x"}
    (folder / "onnxopt.json").write_text(json.dumps(manifest))
    code, _o, err = cli("bench", folder, "--generate")
    assert_clean_error(code, err, "part 'encoder' (../encoder_model.onnx) is not a file in the folder")


def test_lengths_past_the_position_table_are_refused_by_name(cli, exported, tmp_path):
    model = shutil.copytree(exported["bart"], tmp_path / "m")  # BART: 128 learned positions
    code, _o, err = cli("bench", model, "--generate", "--new-tokens", "200")
    assert_clean_error(code, err, "--new-tokens 200 exceeds", "max_position_embeddings 128")
    code, _o, err = cli("bench", model, "--generate", "--prompt-len", "300")
    assert_clean_error(code, err, "--prompt-len 300 exceeds")
    code, _o, err = cli("eval", model, "--task", "generation", "--reference", model, "--new-tokens", "129")
    assert_clean_error(code, err, "--new-tokens 129 exceeds")
