"""The NNCF peer: `nncf.quantize` on the fp32 ONNX export with its transformer defaults (preset
MIXED, SmoothQuant, softmax x V left fp32), 40 calibration samples of the same embedded text as
onnxopt's. Run by the Python of its own venv (`make nncf-venv`: NNCF's pins never touch ours):

    build/nncf-venv/bin/python benchmarks/nncf_peer.py FP32_DIR OUT_DIR [--calib 40]
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

import numpy as np
import onnx


def embedded_texts(count: int) -> list[str]:
    """The first `count` samples onnxopt's calibration takes (data/sources.embedded_samples)."""
    corpus = Path(__file__).resolve().parent.parent / "calib" / "en.txt"
    texts = [line.strip() for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(0).shuffle(texts)
    return texts[:count]


def main() -> None:
    import nncf
    from tokenizers import Tokenizer

    parser = argparse.ArgumentParser()
    parser.add_argument("fp32", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--calib", type=int, default=40)
    args = parser.parse_args()
    model = onnx.load(str(args.fp32 / "model.onnx"))
    names = [i.name for i in model.graph.input]
    tokenizer = Tokenizer.from_file(str(args.fp32 / "tokenizer.json"))
    tokenizer.enable_truncation(128)
    feeds = []
    for text in embedded_texts(args.calib):
        enc = tokenizer.encode(text)
        values = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids}
        feeds.append({k: np.array([values[k]], np.int64) for k in names})
    quantized = nncf.quantize(
        model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds)
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for item in args.fp32.iterdir():
        if item.is_file() and item.suffix in (".json", ".txt") and item.name != "onnxopt.json":
            shutil.copy2(item, args.out / item.name)
    onnx.save(quantized, str(args.out / "model.onnx"))
    print(f"NNCF {nncf.__version__}: {args.out / 'model.onnx'}")


if __name__ == "__main__":
    main()
