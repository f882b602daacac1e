"""Self-supervised and multimodal objectives: SimCLR, MoCo, RotNet, MAE, CLIP, Flamingo."""
