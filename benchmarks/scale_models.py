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

SHAPES = {
    # hidden, layers, heads, kv heads, intermediate, tied embeddings, architecture
    "qwen-0.5b": dict(
        model_type="qwen2",
        hidden_size=896,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        tie_word_embeddings=True,
    ),
    "llama-1b": dict(
        model_type="llama",
        hidden_size=2048,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=8192,
        tie_word_embeddings=True,
    ),
    "llama-3b": dict(
        model_type="llama",
        hidden_size=3072,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        intermediate_size=8192,
        tie_word_embeddings=False,
    ),
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
