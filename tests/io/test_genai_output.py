"""genai_config.json (onnxopt/io/genai_config.py): every decoder folder onnxopt writes is served by
onnxruntime-genai as it is, and genai generates what onnxopt generates, token for token, with the
same logits at every step. Tiny random models built in code: a Llama with grouped-query attention
(4 query heads, 2 K/V heads of 16) through export, quantize --int4 and --dynamic, optimize and
prune, and the conftest GPT-2, which genai runs as its generic "decoder" type."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxopt.errors import OnnxoptError
from onnxopt.evaluate.generation import decoder_of
from onnxopt.io.genai_config import GENAI_CONFIG, genai_config, write_genai_config
from tests.conftest import export_to
from tests.prune.test_prune_decoders import build_tiny_decoder

NEW_TOKENS = 20
PROMPT = np.array([[5, 9, 12, 20, 33, 7, 41, 28]], np.int64)  # the tiny vocabulary's words, no <eos>


def _quantize(mode, **options):
    def run(src: Path, out: Path) -> None:
        from onnxopt.quantize.workflow import quantize

        quantize(src, out, mode=mode, **options)

    return run


def _optimize(src: Path, out: Path) -> None:
    from onnxopt.optimize.workflow import optimize

    optimize(src, out)


def _prune(src: Path, out: Path) -> None:
    from onnxopt.prune.workflow import prune

    prune(src, out, sparsity=0.5, calib=16)  # one of each layer's two K/V heads


# Each workflow's output, and whether past and present may share one buffer there: only where
# GroupQueryAttention (fused by quantize and optimize) reads every past; the unfused export and
# the pruned graph concatenate, and genai refuses a shared buffer for them (Concat's present is
# longer than the buffer it was handed).
WORKFLOWS = {
    "export": (None, False),
    "int4": (_quantize("int4"), True),
    # the LM head and the embedding table in 4 bits too (GatherBlockQuantized)
    "int4-small": (_quantize("int4", head_bits=4, embedding_bits=4), True),
    "dynamic": (_quantize("dynamic"), True),
    "optimize": (_optimize, True),
    "prune": (_prune, False),
}


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    hf = build_tiny_decoder("llama", tmp_path_factory.mktemp("hf") / "llama", hidden=64)
    (hf / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }} {% endfor %}")
    return export_to(hf, tmp_path_factory.mktemp("onnx") / "llama")


def genai_greedy(folder: Path, prompt: np.ndarray, new_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """The tokens onnxruntime-genai generates greedily after `prompt` (ids, no tokenizer), and the
    logits it chose each from."""
    og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed (extra genai)")
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=prompt.shape[1] + new_tokens)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    logits = []
    while not generator.is_done():
        logits.append(generator.get_logits()[0, -1])
        generator.generate_next_token()
    return np.asarray(generator.get_sequence(0))[prompt.shape[1] :], np.stack(logits)


def onnxopt_greedy(folder: Path, prompt: np.ndarray, new_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """onnxopt's own greedy generation (runtime.generation.Decoder.greedy), and the logits of each
    step, read again through the decoder's cache."""
    decoder, _tokenizer, _context = decoder_of(folder)
    tokens = decoder.greedy(prompt, new_tokens)[0]
    run = decoder.runner(1, prompt.shape[1] + new_tokens)
    logits = [run(prompt, 0)[0]]
    for i, token in enumerate(tokens[:-1]):
        logits.append(run(np.array([[token]], np.int64), prompt.shape[1] + i)[0])
    return tokens, np.stack(logits)


def assert_genai_generates_as_onnxopt(folder: Path) -> None:
    theirs, their_logits = genai_greedy(folder, PROMPT, NEW_TOKENS)
    ours, our_logits = onnxopt_greedy(folder, PROMPT, NEW_TOKENS)
    assert len(theirs) == NEW_TOKENS, f"genai stopped early: {theirs.tolist()}"
    np.testing.assert_array_equal(theirs, ours)
    # The same graph through the same kernels: 0.0 apart on this machine's tiny models.
    np.testing.assert_allclose(their_logits, our_logits, rtol=0, atol=1e-4)


@pytest.mark.parametrize("workflow", WORKFLOWS)
def test_genai_generates_what_onnxopt_generates(workflow, llama, tmp_path):
    make, shared = WORKFLOWS[workflow]
    folder = llama
    if make is not None:
        folder = tmp_path / workflow
        make(llama, folder)
    config = json.loads((folder / GENAI_CONFIG).read_text())
    assert config["model"]["type"] == "llama"
    assert config["search"]["past_present_share_buffer"] is shared
    decoder = config["model"]["decoder"]
    kv_heads = 1 if workflow == "prune" else 2
    assert (decoder["num_key_value_heads"], decoder["num_attention_heads"]) == (kv_heads, 2 * kv_heads)
    assert (decoder["head_size"], decoder["num_hidden_layers"]) == (16, 2)
    # genai's tokenizer reads them beside the model (the tiny word-level one it cannot parse: the
    # prompt here is token ids); the chat template is where transformers 4.57 saves it.
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        assert (folder / name).is_file()
    manifest = json.loads((folder / "onnxopt.json").read_text())
    assert GENAI_CONFIG in manifest["files"]  # onnxopt's own file, removed with the folder
    if workflow == "int4-small":
        graph = onnx.load(str(folder / "model.onnx")).graph
        nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
        bits = {a.i for n in nbits for a in n.attribute if a.name == "bits"}
        assert bits == {4} and any(n.op_type == "GatherBlockQuantized" for n in graph.node)
    assert_genai_generates_as_onnxopt(folder)


def test_genai_runs_gpt2_as_its_generic_decoder(tiny_gpt2_onnx):
    config = json.loads((tiny_gpt2_onnx / GENAI_CONFIG).read_text())
    # genai's "gpt2" type is its older GPT model, which fails on optimum's graph.
    assert config["model"]["type"] == "decoder"
    assert_genai_generates_as_onnxopt(tiny_gpt2_onnx)


def test_genai_reads_weights_from_external_data_beside_the_model(llama, tmp_path):
    folder = tmp_path / "external"
    shutil.copytree(llama, folder)
    model = onnx.load(str(folder / "model.onnx"))
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    assert (folder / "model.onnx").stat().st_size < (folder / "model.onnx.data").stat().st_size
    assert write_genai_config(folder)
    assert_genai_generates_as_onnxopt(folder)


def test_encoder_folders_get_no_genai_config(tiny_bert_onnx, tiny_bert_dynamic, tmp_path):
    assert not (tiny_bert_onnx / GENAI_CONFIG).exists()
    assert not (tiny_bert_dynamic / GENAI_CONFIG).exists()
    folder = tmp_path / "bert"
    shutil.copytree(tiny_bert_onnx, folder)
    (folder / GENAI_CONFIG).write_text("{}")  # as copied from a source folder: it describes another graph
    assert write_genai_config(folder) is False
    assert not (folder / GENAI_CONFIG).exists()


def _renamed(model: onnx.ModelProto, old: str, new: str) -> onnx.ModelProto:
    for value in [*model.graph.input, *model.graph.output]:
        value.name = value.name.replace(old, new)
    for node in model.graph.node:
        node.input[:] = [name.replace(old, new) for name in node.input]
        node.output[:] = [name.replace(old, new) for name in node.output]
    return model


def test_cache_names_outside_genai_patterns_are_one_clear_error(llama):
    model = onnx.load(str(llama / "model.onnx"), load_external_data=False)
    assert genai_config(llama, model) is not None
    model = _renamed(model, "1.key", "7.key")  # layers 0 and 7: genai would ask for layer 1
    with pytest.raises(OnnxoptError, match=r"past_key_values\.7\.key.*'past_key_values\.%d\.key'"):
        genai_config(llama, model)


def test_uneven_cache_widths_get_no_genai_config(llama):
    model = onnx.load(str(llama / "model.onnx"), load_external_data=False)
    for value in model.graph.input:
        if value.name.startswith("past_key_values.1."):
            value.type.tensor_type.shape.dim[1].dim_value = 1  # layer 1 kept one K/V head, layer 0 two
    assert genai_config(llama, model) is None


def test_the_tokenizers_end_token_joins_eos(llama, tmp_path):
    folder = tmp_path / "chat"
    shutil.copytree(llama, folder)
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    assert genai_config(folder, model)["model"]["eos_token_id"] == 1  # config.json's, the tokenizer's too
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": 7, "bos_token_id": 6}))
    tokens = genai_config(folder, model)["model"]
    # generation_config.json's over config.json's; the tokenizer's <eos> (id 1) first, as the model
    # builder writes it.
    assert (tokens["eos_token_id"], tokens["bos_token_id"], tokens["pad_token_id"]) == ([1, 7], 6, 1)
