"""Read-only queries over a graph: lookups (graph_index), the blocks pruning can slice and their
channels (prune_structures), the activations smoothing can rescale (smooth_groups,
smooth_producers) and the error it is chosen by (smooth_error; weight_grids for weight-only
grids; block_search for int4 blocks fitted to the activations' weights), the MatMuls by role
(matmul_roles: LM head, after a GELU), the ops a graph holds (int8_ops). Nothing here changes a
model; the passes that do are in onnxopt/passes/."""
