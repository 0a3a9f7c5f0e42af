"""Find the prunable structures of an unfused transformer export, by graph shape, not by name.

FFN: an up projection (MatMul + bias Add, or Gemm with bias) of width F, an elementwise activation
(any GELU spelling, ReLU, SiLU as Sigmoid + Mul), and a down projection whose weight has F rows.
Gated FFNs (SwiGLU, GeGLU) join two projections of width F elementwise; a packed gate/up
projection of width 2F cut in halves (Phi-3, ModernBERT) counts each neuron's two columns.
Reshapes between them whose target shape carries F (GPT-2's Conv1D export) are recorded so
folding can rewrite them.

Attention (BERT, RoBERTa, DistilBERT, MiniLM): Q, K and V projections, each MatMul + bias Add ->
Reshape to (batch, seq, heads, head_dim); the scores Softmax; the context MatMul with V; the
merge Reshape to (batch, seq, heads * head_dim); and the output projection. The shape constants
that carry the head count are recorded per layer. Decoders (GPT-2, Llama, Qwen2, Mistral, Phi-3)
are traced from the Softmax through rotary embeddings, the KV cache and repeat_kv to separate or
packed Q/K/V; a unit is a K/V head with the query heads that read it (traced_attention).
"""

from onnxopt.graph_queries.prune_structures.attention import find_attention_blocks
from onnxopt.graph_queries.prune_structures.blocks import (
    AttentionBlock,
    FfnBlock,
    Linear,
    ShapeConst,
    block_linears,
    head_channels,
    query_channels,
)
from onnxopt.graph_queries.prune_structures.ffn import find_ffn_blocks

__all__ = [
    "AttentionBlock",
    "FfnBlock",
    "Linear",
    "ShapeConst",
    "block_linears",
    "find_attention_blocks",
    "find_ffn_blocks",
    "head_channels",
    "query_channels",
]
