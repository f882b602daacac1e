"""Graph neural networks (GCN, GAT, GraphSAGE) over padded, static-shape graph batches, and
their objectives."""
