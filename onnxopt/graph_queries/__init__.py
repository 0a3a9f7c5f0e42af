"""Read-only queries over a graph: lookups (graph_index), the blocks pruning can slice
(prune_structures), the activations smoothing can rescale (smooth_groups, smooth_producers) and
the error it is chosen by (smooth_error), the int8 ops a graph holds (int8_ops). Nothing here
changes a model; the passes that do are in onnxopt/passes/."""
