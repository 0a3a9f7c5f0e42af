"""Hostile GGUF files (issue 26): each written here in a few bytes, each refused by onnxopt's own
header reader (onnxopt.io.gguf_header, onnxopt.io.gguf_model) with one line naming the problem,
exit 2, within seconds and before torch is imported. Before it, the `gguf` reader behind
transformers trusted the header: a declared 2^62-item array or an 8192-wide model with no weights
ran out of memory, a truncated file was an IndexError, and a file with no tensors exported random
weights.
"""

import math
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from onnxopt.errors import OnnxoptError
from onnxopt.export.sources import resolve_source
from onnxopt.io.gguf_header import read_header
from onnxopt.io.gguf_model import check_gguf
from tests.conftest import assert_clean_error, error_lines

U8, U32, STRING, ARRAY, U64 = 0, 4, 8, 9, 10
F32, Q8_0 = 0, 8
MEMORY_LIMIT = 3 << 30  # the probes ran past 4 GB; the refusal must fit well under this


def _str(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def kv(key: str, kind: int, payload: bytes) -> bytes:
    return _str(key) + struct.pack("<I", kind) + payload


def u32(key: str, value: int) -> bytes:
    """A u32 value, or a u64 where it does not fit."""
    return (
        kv(key, U32, struct.pack("<I", value)) if value < 1 << 32 else kv(key, U64, struct.pack("<Q", value))
    )


def text(key: str, value: str) -> bytes:
    return kv(key, STRING, _str(value))


def array(key: str, item_type: int, count: int, payload: bytes = b"") -> bytes:
    return kv(key, ARRAY, struct.pack("<IQ", item_type, count) + payload)


def gguf(kvs, tensors=(), *, version=3, kv_count=None, tensor_count=None, data=True) -> bytes:
    """A GGUF file: `tensors` as (name, dims, type); F32 and Q8_0 data written as zeros."""
    counts = (
        len(tensors) if tensor_count is None else tensor_count,
        len(kvs) if kv_count is None else kv_count,
    )
    out = b"GGUF" + struct.pack("<IQQ", version, *counts) + b"".join(kvs)
    offset = 0
    for name, dims, kind in tensors:
        out += (
            _str(name) + struct.pack(f"<I{len(dims)}Q", len(dims), *dims) + struct.pack("<IQ", kind, offset)
        )
        elements = math.prod(dims)
        offset += -(-(elements * 4 if kind == F32 else elements // 32 * 34) // 32) * 32
    out += b"\0" * (-len(out) % 32)
    return out + (b"\0" * offset if data else b"")


def llama_kvs(
    hidden=8, heads=2, kv_heads=1, ffn=16, blocks=2, vocab=5, arch="llama", **declared
) -> list[bytes]:
    """A llama's metadata, with a BPE tokenizer transformers loads (so the old code went on to build
    the model); `declared` adds or replaces `{arch}.KEY` values (dots as double underscores)."""
    sizes = {
        "block_count": blocks, "embedding_length": hidden, "feed_forward_length": ffn,
        "attention.head_count": heads, "attention.head_count_kv": kv_heads, "vocab_size": vocab,
    }  # fmt: skip
    sizes.update({key.replace("__", "."): value for key, value in declared.items()})
    tokens = ["a", "b", "c", "ab", "bc"] + [f"t{i}" for i in range(vocab - 5)]
    return [
        text("general.architecture", arch),
        *(u32(f"{arch}.{key}", value) for key, value in sizes.items()),
        text("tokenizer.ggml.model", "gpt2"),
        array("tokenizer.ggml.tokens", STRING, vocab, b"".join(map(_str, tokens))),
        array("tokenizer.ggml.merges", STRING, 2, _str("a b") + _str("b c")),
        u32("tokenizer.ggml.bos_token_id", 0),
        u32("tokenizer.ggml.eos_token_id", 1),
    ]


def llama_tensors(hidden=8, heads=2, kv_heads=1, ffn=16, blocks=2, vocab=5, skip=()) -> list:
    head = hidden // heads
    shapes = {
        "attn_norm": [hidden], "ffn_norm": [hidden], "attn_q": [hidden, hidden],
        "attn_k": [hidden, kv_heads * head], "attn_v": [hidden, kv_heads * head],
        "attn_output": [hidden, hidden], "ffn_gate": [hidden, ffn], "ffn_up": [hidden, ffn],
        "ffn_down": [ffn, hidden],
    }  # fmt: skip
    tensors = [("token_embd.weight", [hidden, vocab], F32), ("output_norm.weight", [hidden], F32)]
    for index in range(blocks):
        tensors += [(f"blk.{index}.{part}.weight", dims, F32) for part, dims in shapes.items()]
    return [tensor for tensor in tensors if tensor[0] not in skip]


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _export(path: Path, out: Path):
    """`onnxopt export path -o out` in a fresh process under a 3 GB address-space limit: (result,
    seconds, whether torch had been imported when it exited)."""
    code = (
        "import atexit, sys; atexit.register(lambda: print('torch' in sys.modules));"
        "from onnxopt.cli.app import entry; sys.argv[0] = 'onnxopt'; entry()"
    )
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code, "export", str(path), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_memory,
    )
    return result, time.perf_counter() - start, result.stdout.strip().splitlines()[-1:] == ["True"]


def _assert_refused(tmp_path: Path, name: str, content: bytes, *fragments: str) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    result, seconds, torch_imported = _export(path, tmp_path / "out")
    assert_clean_error(result.returncode, result.stderr, *fragments)
    assert seconds < 10, seconds
    assert not torch_imported
    assert not (tmp_path / "out").exists()
    return error_lines(result.stderr)[0]


# The probes of issue 26, each in a fresh process as a user meets them.


def test_a_declared_2_to_62_item_array_is_refused_in_a_134_byte_file(tmp_path):
    content = gguf([array("general.tags", U8, 1 << 62)], kv_count=1) + b"\0" * 64
    assert len(content) < 200
    _assert_refused(tmp_path, "huge.gguf", content, "general.tags", str(1 << 62), "items")


def test_a_30_million_item_array_is_refused_before_it_is_read(tmp_path):
    count = 30_000_000
    content = gguf([*llama_kvs(), array("tokenizer.ggml.scores", U8, count, b"\1" * count)], llama_tensors())
    _assert_refused(tmp_path, "big-array.gguf", content, "tokenizer.ggml.scores", "30000000 items")


def test_a_wide_model_with_no_weights_is_refused(tmp_path):
    """1.7 MB of vocabulary declaring hidden 8192 and FFN 32768 ran transformers out of memory."""
    kvs = llama_kvs(hidden=8192, heads=64, kv_heads=8, ffn=32768, blocks=30, vocab=150_000)
    content = gguf(kvs)
    assert len(content) > 1_500_000
    _assert_refused(tmp_path, "wide.gguf", content, "holds no tensors")


def test_declared_sizes_must_be_the_tensors_sizes(tmp_path):
    kvs = llama_kvs(hidden=8192, ffn=32768)
    line = _assert_refused(tmp_path, "wide.gguf", gguf(kvs, llama_tensors()), "llama.embedding_length = 8192")
    assert "token_embd.weight is 8 wide" in line
    kvs = llama_kvs(ffn=32768)
    line = _assert_refused(tmp_path, "ffn.gguf", gguf(kvs, llama_tensors()), "feed_forward_length = 32768")
    assert "no tensor has that dimension" in line


def test_200_declared_blocks_must_hold_tensors(tmp_path):
    content = gguf(llama_kvs(blocks=200), llama_tensors(blocks=2))
    line = _assert_refused(tmp_path, "deep.gguf", content, "declares 200 blocks", "blk.2.attn_norm.weight")
    assert line.count("onnxopt: error:") == 1


def test_a_file_with_no_tensors_does_not_export_random_weights(tmp_path):
    _assert_refused(tmp_path, "empty.gguf", gguf(llama_kvs()), "holds no tensors")


def test_truncated_and_magic_only_files_are_named_not_an_index_error(tmp_path):
    whole = gguf(llama_kvs(), llama_tensors())
    line = _assert_refused(tmp_path, "cut.gguf", whole[: len(whole) // 3], "is truncated")
    assert "IndexError" not in line
    _assert_refused(tmp_path, "magic.gguf", b"GGUF", "is truncated", "4 bytes")


# The other checks of the header, in process: each must refuse, none may reach transformers.


def _refused(cli, tmp_path: Path, content: bytes, *fragments: str) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(content)
    code, _out, err = cli("export", path, "-o", tmp_path / "out")
    assert_clean_error(code, err, *fragments)


HUGE_STRING = _str("k") + struct.pack("<IQ", STRING, 1 << 62)
NESTED = kv("k", ARRAY, struct.pack("<IQ", ARRAY, 1) * 5)
DAMAGED = {
    "bad-magic": (b"PK\3\4" + b"\0" * 60, ("is not a GGUF file",)),
    "version-1": (gguf(llama_kvs(), llama_tensors(), version=1), ("has version 1", "versions 2 and 3")),
    "kv-count": (gguf([], [], kv_count=1 << 40), ("declares 1099511627776 metadata entries",)),
    "tensor-count": (gguf([], [], tensor_count=1 << 40), ("1099511627776 tensors",)),
    "huge-string": (gguf([HUGE_STRING], []), ("k (4611686018427387904 bytes) needs", "the file ends")),
    "long-key": (gguf([text("k" * 70_000, "v")], []), ("a metadata key is 70000 bytes",)),
    "value-type": (gguf([kv("k", 42, b"\0" * 16)], []), ("k has unknown value type 42",)),
    "nested": (gguf([NESTED], []), ("nests arrays deeper than 3",)),
    "duplicate-key": (gguf([u32("a", 1), u32("a", 2)], []), ("metadata key 'a' twice",)),
    "alignment": (gguf([u32("general.alignment", 3)], []), ("general.alignment is 3",)),
    "tensor-type": (gguf(llama_kvs(), [("token_embd.weight", [8, 5], 99)]), ("GGML type 99",)),
    "five-dims": (gguf(llama_kvs(), [("token_embd.weight", [8, 5, 1, 1, 1], F32)]), ("5 dimensions",)),
    "block-multiple": (
        gguf(llama_kvs(), [("token_embd.weight", [8, 5], Q8_0)]),
        ("not a multiple of its type's block",),
    ),
    "no-data": (gguf(llama_kvs(), llama_tensors(), data=False), ("needs bytes up to",)),
    "huge-tensor": (
        gguf(llama_kvs(), [("token_embd.weight", [8, 1 << 40], F32)], data=False),
        ("[8, 1099511627776]",),
    ),
}


@pytest.mark.parametrize(("content", "fragments"), list(DAMAGED.values()), ids=list(DAMAGED))
def test_a_damaged_header_is_refused(cli, tmp_path, content, fragments):
    _refused(cli, tmp_path, content, *fragments)


MISMATCHED = {
    "no-arch": ([], llama_tensors(), ("declares no general.architecture",)),
    "no-embedding": (
        llama_kvs(),
        llama_tensors(skip={"token_embd.weight"}),
        ("no 2-D tensor token_embd.weight",),
    ),
    "missing-ffn-down": (
        llama_kvs(),
        llama_tensors(skip={"blk.1.ffn_down.weight"}),
        ("2 blocks", "no tensor blk.1.ffn_down"),
    ),
    "no-output-norm": (
        llama_kvs(),
        llama_tensors(skip={"output_norm.weight"}),
        ("no tensor output_norm.weight",),
    ),
    "no-block-count": (
        [text("general.architecture", "phi3"), *llama_kvs()[1:]],
        llama_tensors(),
        ("no phi3.block_count",),
    ),
    "generic-block": (llama_kvs(arch="phi3", blocks=3), llama_tensors(), ("declares 3 blocks", "blk.2.*")),
    "vocab": (llama_kvs(vocab_size=1 << 30), llama_tensors(), ("llama.vocab_size = 1073741824", "5 rows")),
    "generic-ffn": (
        llama_kvs(arch="gemma2", ffn=1 << 30),
        llama_tensors(),
        ("gemma2.feed_forward_length", "no tensor has"),
    ),
    "llama-ffn": (
        llama_kvs(ffn=8),
        llama_tensors(),
        ("blk.0.ffn_up.weight is [8, 16]", "FFN 8) makes it [8, 8]"),
    ),
    "kv-heads": (llama_kvs(kv_heads=2), llama_tensors(), ("blk.0.attn_k.weight is [8, 4]", "2 KV heads")),
    "heads": (llama_kvs(heads=1 << 20), llama_tensors(), ("head_count = 1048576", "8 wide")),
    "2-to-60-blocks": (llama_kvs(blocks=1 << 60), llama_tensors(), ("declares 1152921504606846976 blocks",)),
    "rope-huge": (
        llama_kvs(rope__dimension_count=1 << 20),
        llama_tensors(),
        ("dimension_count = 1048576", "over 16"),
    ),
    "rope-head-dim": (
        llama_kvs(rope__dimension_count=2),
        llama_tensors(),
        ("attn_q.weight is [8, 8]", "heads of 2"),
    ),
}


@pytest.mark.parametrize(("kvs", "tensors", "fragments"), list(MISMATCHED.values()), ids=list(MISMATCHED))
def test_metadata_must_match_the_tensors(cli, tmp_path, kvs, tensors, fragments):
    _refused(cli, tmp_path, gguf(kvs, tensors), *fragments)


# The reader on files that are right.


def test_the_reader_reads_a_valid_tiny_file_as_the_gguf_package_does(tmp_path):
    from gguf import GGUFReader, GGUFWriter

    path = tmp_path / "tiny.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_array("tokenizer.ggml.tokens", ["a", "bb", "ccc"])
    writer.add_array("tokenizer.ggml.scores", [0.5, 1.5, 2.5])
    writer.add_tensor("token_embd.weight", np.ones((3, 8), np.float32))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(8, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    header, theirs = read_header(path), GGUFReader(str(path))
    assert header.version == 3 and header.data_offset == theirs.data_offset
    assert header.metadata["general.architecture"] == "llama" and header.metadata["llama.block_count"] == 1
    assert header.metadata["tokenizer.ggml.tokens"].count == 3
    assert list(header.metadata) == [key for key in theirs.fields if not key.startswith("GGUF.")]
    for tensor in theirs.tensors:
        ours = header.tensors[tensor.name]
        assert ours.dims == tuple(int(d) for d in tensor.shape) and ours.nbytes == tensor.n_bytes
        assert header.data_offset + ours.offset == tensor.data_offset


def test_a_valid_tiny_llama_passes_every_check(tmp_path):
    path = tmp_path / "tiny.gguf"
    path.write_bytes(gguf(llama_kvs(), llama_tensors()))
    header = check_gguf(path)
    assert len(header.tensors) == 2 + 2 * 9 and header.tensors["blk.1.attn_k.weight"].dims == (8, 4)
    assert resolve_source(str(path)).gguf == path


def test_the_bundled_smollm2_passes_every_check():
    source = resolve_source(None, "smollm2")
    header = check_gguf(source.gguf)
    assert header.metadata["llama.block_count"] == 30 and len(header.tensors) == 272
    assert max(header.data_offset + t.offset + t.nbytes for t in header.tensors.values()) == header.size


def test_a_file_that_cannot_be_opened_is_an_onnxopt_error(tmp_path):
    (tmp_path / "folder.gguf").mkdir()
    with pytest.raises(OnnxoptError, match="cannot read GGUF file .*folder.gguf: Is a directory"):
        read_header(tmp_path / "folder.gguf")
