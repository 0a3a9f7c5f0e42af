"""Random-weight decoders of the shapes users bring (Llama-3.2-1B/3B, Qwen2.5-0.5B), saved as Hugging
Face folders in bf16, the way such checkpoints ship. Weights are random: these test memory and time at
scale, never accuracy. The tokenizer is SmolLM2's (vocab 49152), read from the bundled GGUF.

    python benchmarks/scale_models.py --shape llama-1b --out /tmp/llama-1b
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _shape(model_type, hidden, layers, heads, kv_heads, intermediate, tied) -> dict:
    return dict(
        model_type=model_type,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate,
        tie_word_embeddings=tied,
    )


SHAPES = {
    "qwen-0.5b": _shape("qwen2", 896, 24, 14, 2, 4864, True),
    "llama-1b": _shape("llama", 2048, 16, 32, 8, 8192, True),
    "llama-3b": _shape("llama", 3072, 28, 24, 8, 8192, False),
}
VOCAB = 49152


def build(shape: str, out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = dict(SHAPES[shape])
    model_type = settings.pop("model_type")
    config = AutoConfig.for_model(
        model_type,
        vocab_size=VOCAB,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        torch_dtype="bfloat16",
        **settings,
    )
    torch.manual_seed(seed)
    # Built straight in bf16: a 3B model in fp32 would be 12 GB before it is even saved.
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True, max_shard_size="2GB")
    _copy_tokenizer(out)
    return out


def _copy_tokenizer(out: Path) -> None:
    from transformers import AutoTokenizer

    from onnxopt.export.gguf_tokenizer import fix_gguf_tokenizer
    from onnxopt.export.sources import bundled_source

    gguf = bundled_source("smollm2").gguf
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(out)
    fix_gguf_tokenizer(gguf, out)
    # The ORT GenAI builder's transformers (5.x) refuses "add_prefix_space": null
    config = out / "tokenizer_config.json"
    settings = json.loads(config.read_text())
    if settings.get("add_prefix_space", False) is None:
        settings["add_prefix_space"] = False
        config.write_text(json.dumps(settings, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    start = time.perf_counter()
    build(args.shape, args.out)
    print(f"{args.shape}: {args.out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
