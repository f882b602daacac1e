"""The machinery every family shares: the loop, data, checkpoints, metrics, the CLI.

Knows no architecture by name: it resolves `config.task` and `config.model_name` with
importlib through `arch.load`.
"""
