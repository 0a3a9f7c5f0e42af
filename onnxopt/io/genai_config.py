"""genai_config.json: what onnxruntime-genai reads to serve a decoder folder
(`onnxruntime_genai.Model(folder)`), written beside every decoder onnxopt saves.

The model builder of onnxruntime-genai writes this file for the graphs it builds; onnxopt's graphs
keep optimum's names (`past_key_values.%d.key`, `present.%d.key`, ...), which the file maps. Read
from the graph: the input and output names, the layers and the cache's heads and head size, and
whether past and present may share one buffer: only where GroupQueryAttention alone reads each
past and writes its present (io.cache_layout); a plain-attention graph (an unfused fp32 export)
concatenates past and new keys into a fresh present, so genai must hand the present back as the
next past (told to share, genai 0.18.0 failed on the fp32 export at the first decode step: Concat's
present of 32 positions against its buffer of 26). From config.json and generation_config.json:
the model type, the special tokens and the context length. The search defaults are greedy, as
onnxopt's own generation.

The type is config.json's model_type where genai runs that type as a decoder-only LLM, else its
generic "decoder" (the same DecoderOnly_Model, driven by the names in this file alone). GPT-2 too:
genai's "gpt2" type is its older GPT model, which fails on optimum's graph ("Model input was not
found"), where "decoder" generated the same tokens as onnxopt (onnxruntime-genai 0.18.0).

Not written (and a copy from the source folder removed, since it would describe another graph):
for encoders, for encoder-decoders in parts, and for caches whose heads or head size differ
between layers (after `prune` removed KV heads unevenly), which genai's one
`num_key_value_heads` cannot describe.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from onnxopt.errors import OnnxoptError, cut
from onnxopt.io.cache_layout import CacheLayout, cache_layout
from onnxopt.io.files import read_json
from onnxopt.io.hf_config import read_config
from onnxopt.io.saving import MODEL_FILE

GENAI_CONFIG = "genai_config.json"
# config.json model types that onnxruntime-genai 0.18.0 runs as decoder-only LLMs under their own
# name (the type names in its library, less "gpt2" and the multimodal ones); any other type fails
# there with "Unsupported model_type", so it is written as "decoder".
GENAI_TYPES = frozenset(
    "chatglm gemma gemma2 gemma3_text granite llama mistral nemotron olmo phi phimoe phi3 phi3small "
    "qwen2 qwen3 smollm3".split()
)
GENERIC_TYPE = "decoder"
_NAMES = {  # genai key -> the graph's names, %d the layer (optimum's names)
    "past_key_names": "past_key_values.%d.key",
    "past_value_names": "past_key_values.%d.value",
    "present_key_names": "present.%d.key",
    "present_value_names": "present.%d.value",
}


def write_genai_config(folder: Path, model: onnx.ModelProto | None = None) -> bool:
    """Write genai_config.json for the decoder at `folder`/model.onnx (`model`: that graph, already
    in memory, so a finished run does not parse its weights again); False (and no such file) where
    there is nothing genai could run (see the module's docstring), cache names outside genai's
    patterns included: the run that wrote the model has succeeded, and its folder still serves
    ORTModel and onnxopt."""
    path = folder / GENAI_CONFIG
    onnx_path = folder / MODEL_FILE
    config = None
    if onnx_path.is_file():
        try:
            graph = model if model is not None else onnx.load(str(onnx_path), load_external_data=False)
            config = genai_config(folder, graph)
        except OnnxoptError:
            config = None
    if config is None:
        path.unlink(missing_ok=True)
        return False
    path.write_text(json.dumps(config, indent=4) + "\n", encoding="utf-8")
    return True


def genai_config(folder: Path, model: onnx.ModelProto) -> dict | None:
    """The genai_config.json of the decoder `model` saved as `folder`/model.onnx, None where genai
    could not run it."""
    layout = cache_layout(model)
    if layout is None or "input_ids" not in layout.inputs:
        return None
    shapes = _cache_shapes(model, layout.past)
    if len(shapes) != 1:
        return None  # per-layer widths (an uneven prune)
    hf = read_config(folder)  # not ModelInfo: model_files, which ModelInfo reads through, calls this
    kind = hf.get("model_type") if hf.get("model_type") in GENAI_TYPES else GENERIC_TYPE
    context = _int(hf, "max_position_embeddings", "n_positions", "n_ctx") or 2048
    bos, eos, pad = _special_tokens(folder, hf)
    return {
        "model": {
            "bos_token_id": bos,
            "context_length": context,
            "decoder": _decoder(hf, layout, *next(iter(shapes))),
            "eos_token_id": eos,
            "pad_token_id": pad,
            "type": kind,
            "vocab_size": _vocab_size(model) or _int(hf, "vocab_size"),
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": False,
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": context,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": layout.gqa_writes_presents,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }


def _decoder(hf: dict, layout: CacheLayout, kv_heads: int, head_size: int) -> dict:
    """The "decoder" entry: the graph's file, names and cache widths (config.json's where the graph
    leaves a width symbolic)."""
    heads = _int(hf, "num_attention_heads", "n_head") or kv_heads
    config_kv = _int(hf, "num_key_value_heads") or heads
    if kv_heads and config_kv and kv_heads != config_kv:  # `prune` kept each K/V head's query heads
        heads = heads * kv_heads // config_kv
    hidden = _int(hf, "hidden_size", "n_embd")
    inputs = {name: name for name in ("input_ids", "attention_mask", "position_ids") if name in layout.inputs}
    return {
        "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
        "filename": MODEL_FILE,
        "head_size": head_size or _int(hf, "head_dim") or hidden // max(heads, 1),
        "hidden_size": hidden or heads * head_size,
        "inputs": inputs | _patterns(layout.past, layout.layers, "past"),
        "outputs": {"logits": "logits", **_patterns(layout.present, layout.layers, "present")},
        "num_attention_heads": heads,
        "num_hidden_layers": layout.layers,
        "num_key_value_heads": kv_heads or config_kv,
    }


def _patterns(names: tuple[str, ...], layers: int, which: str) -> dict[str, str]:
    """genai's `%d` name patterns for the cache inputs or outputs; the graph's names must be exactly
    them for layers 0 to layers - 1, since genai fills the layer number in."""
    found = {f"{which}_{kind}_names": _NAMES[f"{which}_{kind}_names"] for kind in ("key", "value")}
    actual, wanted = set(names), {pattern % i for pattern in found.values() for i in range(layers)}
    if actual != wanted:
        odd = sorted(actual - wanted) or [f"no {min(wanted - actual)}"]
        raise OnnxoptError(
            f"the cache's {which} names ({cut(odd[0], 60)}) do not follow "
            f"{' and '.join(map(repr, found.values()))} for layers 0-{layers - 1}, "
            "which genai_config.json needs",
            "export the model again with `onnxopt export`, which keeps optimum's cache names",
        )
    return found


def _cache_shapes(model: onnx.ModelProto, past: tuple[str, ...]) -> set[tuple[int, int]]:
    """(KV heads, head size) of each past input, 0 where the graph leaves a dim symbolic."""
    dims = {v.name: v.type.tensor_type.shape.dim for v in model.graph.input}
    return {(dims[name][1].dim_value, dims[name][3].dim_value) for name in past}


def _vocab_size(model: onnx.ModelProto) -> int:
    """The logits' last dim where the graph fixes it (the LM head's rows), else 0."""
    for value in model.graph.output:
        if value.name == "logits" and value.type.tensor_type.shape.dim:
            return value.type.tensor_type.shape.dim[-1].dim_value
    return 0


def _int(config: dict, *keys: str) -> int:
    """The first of `keys` config.json sets to a positive integer, else 0."""
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def _token_ids(value) -> list[int]:
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v >= 0]


def _special_tokens(folder: Path, hf: dict) -> tuple[int, int | list[int], int]:
    """bos, eos and pad ids: generation_config.json's over config.json's (transformers generates
    with the former). The tokenizer's own end token joins eos where the configs miss it, as the
    model builder does: chat models end a turn with it while config.json may name only
    <|endoftext|>."""
    generation = read_json(folder, "generation_config.json") or {}

    def ids(key: str) -> list[int]:
        return _token_ids(generation.get(key)) or _token_ids(hf.get(key))

    eos = ids("eos_token_id")
    end = _tokenizer_end_token(folder)
    if end is not None and end not in eos:
        eos = [end, *eos]
    bos = (ids("bos_token_id") or eos or [0])[0]
    pad = (ids("pad_token_id") or eos or [0])[0]
    return bos, (eos[0] if len(eos) == 1 else eos or [0]), pad


def _tokenizer_end_token(folder: Path) -> int | None:
    """The id of tokenizer_config.json's eos_token in tokenizer.json's added tokens, if both say."""
    config = read_json(folder, "tokenizer_config.json") or {}
    token = config.get("eos_token")
    token = token.get("content") if isinstance(token, dict) else token
    if not isinstance(token, str):
        return None
    tokenizer = read_json(folder, "tokenizer.json") or {}
    for added in tokenizer.get("added_tokens") or []:
        if isinstance(added, dict) and added.get("content") == token:
            found = _token_ids(added.get("id"))
            return found[0] if found else None
    return None
