"""Whether a GGUF file's tensors can fill the model its metadata declares, checked before transformers
builds that model: transformers allocates what the metadata says (a 1.7 MB file declaring hidden
8192 ran out of memory) and fills the tensors it finds, leaving the rest random and silent (a file
with no tensors at all exported). Every declared block must hold tensors, and the declared sizes
must be the sizes of the tensors present.
"""

from __future__ import annotations

import re
from pathlib import Path

from onnxopt.errors import OnnxoptError, cut
from onnxopt.io.gguf_header import Array, GgufHeader, read_header

# Architectures that name their tensors as llama.cpp's llama graph does; the others (phi3's fused
# attn_qkv, mamba's ssm_*, ...) are held to "every declared block holds tensors".
LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3"}
BLOCK_TENSORS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm")
DENSE_FFN = ("ffn_gate", "ffn_up", "ffn_down")
EXPERT_FFN = ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps")
# transformers reads a llama or mistral file's head size from rope.dimension_count.
ROPE_HEAD_DIM = {"llama", "mistral"}
_BLOCK = re.compile(r"blk\.(\d+)\.")
_HINT = "the file's metadata does not match its tensors; download or convert it again"


def check_gguf(path: Path) -> GgufHeader:
    """The header of a GGUF model file, refused (OnnxoptError) unless its tensors fill the model."""
    header = read_header(path)
    shown = cut(str(path))
    if not header.tensors:
        raise OnnxoptError(
            f"GGUF file {shown} holds no tensors (metadata only); its export would be random weights",
            "give the model's GGUF file with its weights",
        )
    arch = header.metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise OnnxoptError(f"GGUF file {shown} declares no general.architecture", _HINT)
    embedding = header.tensors.get("token_embd.weight")
    if embedding is None or len(embedding.dims) != 2:
        raise OnnxoptError(f"GGUF file {shown} holds no 2-D tensor token_embd.weight", _HINT)
    _check_blocks(shown, header, arch)
    _check_sizes(shown, header, arch)
    if arch in LLAMA_LIKE:
        _check_llama_shapes(shown, header, arch)
    return header


def _declared(shown: str, header: GgufHeader, key: str, required: bool = False) -> int | None:
    """The positive integer the metadata declares under `key`. An optional key may be absent, zero
    (mamba's feed_forward_length) or per-layer (an array): None, nothing to check it against."""
    value = header.metadata.get(key)
    if value is None and required:
        raise OnnxoptError(f"GGUF file {shown} declares no {key}", _HINT)
    if value is None or (not required and (value == 0 or isinstance(value, Array))):
        return None
    if type(value) is not int or value <= 0:
        raise OnnxoptError(f"GGUF file {shown} declares {key} = {value!r}, not a positive count", _HINT)
    return value


def _check_blocks(shown: str, header: GgufHeader, arch: str) -> None:
    blocks = _declared(shown, header, f"{arch}.block_count", required=True)
    tensors = header.tensors
    held = {int(m.group(1)) for name in tensors if (m := _BLOCK.match(name))}
    # Each block takes a tensor of its own, so a missing one shows within len(tensors) + 1 blocks:
    # a declared 2^60 blocks is never walked.
    for index in range(min(blocks, len(tensors) + 1)):
        if arch in LLAMA_LIKE:
            expert = f"blk.{index}.ffn_down_exps.weight" in tensors
            needed = [
                f"blk.{index}.{part}.weight" for part in BLOCK_TENSORS + (EXPERT_FFN if expert else DENSE_FFN)
            ]
        else:
            needed = [] if index in held else [f"blk.{index}.*"]
        missing = [name for name in needed if name not in tensors]
        if missing:
            raise OnnxoptError(
                f"GGUF file {shown} declares {blocks} blocks but holds no tensor {missing[0]}", _HINT
            )
    if arch in LLAMA_LIKE and "output_norm.weight" not in tensors:
        raise OnnxoptError(f"GGUF file {shown} holds no tensor output_norm.weight", _HINT)


def _mismatch(shown: str, key: str, value: int, held: str) -> OnnxoptError:
    return OnnxoptError(f"GGUF file {shown} declares {key} = {value} but {held}", _HINT)


def _check_sizes(shown: str, header: GgufHeader, arch: str) -> None:
    """The sizes transformers builds the model from, each against the tensors present."""
    hidden, vocab = header.tensors["token_embd.weight"].dims
    embedding = _declared(shown, header, f"{arch}.embedding_length", required=True)
    if embedding != hidden:
        raise _mismatch(shown, f"{arch}.embedding_length", embedding, f"token_embd.weight is {hidden} wide")
    declared_vocab = _declared(shown, header, f"{arch}.vocab_size")
    if declared_vocab is not None and declared_vocab != vocab:
        raise _mismatch(shown, f"{arch}.vocab_size", declared_vocab, f"token_embd.weight has {vocab} rows")
    dims = {dim for tensor in header.tensors.values() for dim in tensor.dims}
    experts = any("_exps." in name for name in header.tensors)
    # A mixture of experts may declare a dense size no layer uses (Qwen3-MoE does).
    sized = ("expert_count", "expert_feed_forward_length") + (() if experts else ("feed_forward_length",))
    for key in sized:
        value = _declared(shown, header, f"{arch}.{key}")
        if value is not None and value not in dims:
            raise _mismatch(shown, f"{arch}.{key}", value, "no tensor has that dimension")
    heads = _declared(shown, header, f"{arch}.attention.head_count")
    kv_heads = _declared(shown, header, f"{arch}.attention.head_count_kv")
    if heads is not None and heads > hidden:
        raise _mismatch(shown, f"{arch}.attention.head_count", heads, f"the model is {hidden} wide")
    if kv_heads is not None and heads is not None and kv_heads > heads:
        raise _mismatch(shown, f"{arch}.attention.head_count_kv", kv_heads, f"there are {heads} heads")
    largest = max(dims)
    for key in ("attention.key_length", "attention.value_length", "rope.dimension_count"):
        value = _declared(shown, header, f"{arch}.{key}")
        if value is not None and value > largest:
            raise _mismatch(shown, f"{arch}.{key}", value, f"no tensor is over {largest} wide")


def _check_llama_shapes(shown: str, header: GgufHeader, arch: str) -> None:
    """Every block's projections against the declared width, FFN size and heads."""
    hidden = header.tensors["token_embd.weight"].dims[0]
    ffn = _declared(shown, header, f"{arch}.feed_forward_length")
    heads = _declared(shown, header, f"{arch}.attention.head_count", required=True)
    kv_heads = _declared(shown, header, f"{arch}.attention.head_count_kv") or heads
    head_dim = _head_dim(shown, header, arch, hidden, heads)
    for index in range(header.metadata[f"{arch}.block_count"]):
        expected = {
            "attn_q": (hidden, heads * head_dim),
            "attn_k": (hidden, kv_heads * head_dim),
            "attn_v": (hidden, kv_heads * head_dim),
        }
        if ffn is not None and f"blk.{index}.ffn_up.weight" in header.tensors:
            expected["ffn_up"] = (hidden, ffn)
        for part, shape in expected.items():
            name = f"blk.{index}.{part}.weight"
            actual = header.tensors[name].dims
            if actual != shape:
                raise OnnxoptError(
                    f"GGUF file {shown}: tensor {name} is {list(actual)}, but the metadata (width "
                    f"{hidden}, {heads} heads of {head_dim}, {kv_heads} KV heads, FFN {ffn}) makes it "
                    f"{list(shape)}",
                    _HINT,
                )


def _head_dim(shown: str, header: GgufHeader, arch: str, hidden: int, heads: int) -> int:
    """The head size transformers builds: llama's and mistral's from rope.dimension_count, else the
    width over the heads; Qwen3's is its config's own (128), so the file's query is its only measure."""
    rope = _declared(shown, header, f"{arch}.rope.dimension_count") if arch in ROPE_HEAD_DIM else None
    if arch != "qwen3":
        return rope or hidden // heads
    return max(1, header.tensors["blk.0.attn_q.weight"].dims[-1] // heads)
