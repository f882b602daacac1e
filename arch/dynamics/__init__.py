"""Continuous-time models: Neural ODEs (diffrax, discretise-then-optimise and the adjoint),
latent ODEs for irregularly sampled series, liquid time-constant networks (LTC, CfC) and a
continuous normalizing flow (FFJORD), with their objectives."""
