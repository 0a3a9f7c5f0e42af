"""Find the prunable structures of an unfused transformer export, by graph shape, not by name.

FFN: an up projection (MatMul + bias Add, or Gemm with bias) of width F, an elementwise activation
(any GELU spelling, ReLU), and a down projection whose weight has F rows. Reshapes between them
whose target shape carries F (GPT-2's Conv1D export) are recorded so folding can rewrite them.

Attention (BERT, RoBERTa, DistilBERT, MiniLM): Q, K and V projections, each MatMul + bias Add ->
Reshape to (batch, seq, heads, head_dim); the scores Softmax; the context MatMul with V; the
merge Reshape to (batch, seq, heads * head_dim); and the output projection. The shape constants
that carry the head count are recorded per layer. Packed QKV (GPT-2's c_attn + Split) is reported
as not handled, so its heads stay and its FFN is still pruned.
"""

from onnxopt.passes.prune_structures.attention import find_attention_blocks
from onnxopt.passes.prune_structures.blocks import AttentionBlock, FfnBlock, Linear, ShapeConst
from onnxopt.passes.prune_structures.ffn import find_ffn_blocks

__all__ = ["AttentionBlock", "FfnBlock", "Linear", "ShapeConst", "find_attention_blocks", "find_ffn_blocks"]
