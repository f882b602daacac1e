"""Graph neural networks (GCN, GAT, GraphSAGE, MPNN with set2set, ST-GCN) over padded,
static-shape graph batches, neighbour-sampled computation trees (ops.sample_tree /
tree_graph), and their objectives (node classification, graph regression, spatio-temporal
forecasting)."""
