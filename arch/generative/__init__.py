"""Generative models: autoencoders, GANs, diffusion, flows, energy-based and autoregressive models."""
