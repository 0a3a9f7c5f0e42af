"""Model folders in several parts: an encoder-decoder (T5, BART) exported with its cache is three
graphs, as optimum writes them before merging the decoders: the encoder (run once per prompt), the
decoder's first step (no past; it also returns the cross-attention cache) and the decoder with
past (every later step). onnxopt keeps them apart rather than merged: the merged decoder's If node
hides both branches from the quantizers.

The manifest's "parts" says which file is which; a folder without a manifest is read by optimum's
file names. A command that works on one graph only refuses such a folder in one line.
"""

from __future__ import annotations

from pathlib import Path

from onnxopt.errors import OnnxoptError, cut

SEQ2SEQ_PARTS = ("encoder", "decoder", "decoder_with_past")
SEQ2SEQ_FILES = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx")
# The commands that take a folder in parts; the others say so (refusal()).
TAKE_PARTS = "export, quantize, bench --generate, eval and --verify-loading"


def default_parts() -> dict[str, str]:
    return dict(zip(SEQ2SEQ_PARTS, SEQ2SEQ_FILES, strict=True))


def part_files(folder: Path | None) -> dict[str, Path] | None:
    """part -> file of a folder in parts (the manifest's "parts", else optimum's names when all three
    files are there), None for a one-graph folder or a file."""
    if folder is None or not folder.is_dir():
        return None
    from onnxopt.io.manifest import Manifest

    manifest = Manifest.load(folder)
    named = manifest.parts if manifest is not None and manifest.parts else None
    if named is None:
        if not all((folder / name).is_file() for name in SEQ2SEQ_FILES):
            return None
        named = default_parts()
    if sorted(named) != sorted(SEQ2SEQ_PARTS):
        raise OnnxoptError(
            f"{cut(str(folder))}: the manifest's parts are {sorted(named)}, not {list(SEQ2SEQ_PARTS)}",
            "export the model again with `onnxopt export`",
        )
    found = {}
    for part in SEQ2SEQ_PARTS:
        path = folder / named[part]
        if Path(named[part]).name != named[part] or not path.is_file():
            raise OnnxoptError(
                f"{cut(str(folder))}: part {part!r} ({cut(named[part], 60)}) is not a file in the folder",
                "keep the folder as `onnxopt export` wrote it, or export the model again",
            )
        found[part] = path
    return found


def in_parts(path: Path) -> bool:
    return part_files(path if path.is_dir() else None) is not None


def refusal(folder: Path) -> OnnxoptError:
    """The one line a one-graph command gives for a folder in parts."""
    return OnnxoptError(
        f"{cut(str(folder))} is an encoder-decoder in {len(SEQ2SEQ_FILES)} parts "
        f"({', '.join(SEQ2SEQ_FILES)}); this command works on one-graph models only",
        f"{TAKE_PARTS} take encoder-decoder folders; prune and optimize do not yet",
    )
