"""Model compression: quantization, pruning, mixed precision, distillation."""
