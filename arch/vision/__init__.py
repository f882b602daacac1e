"""Perception backbones (image in, features or logits out) and their objectives."""
