"""Experiment configs: one file per experiment (`get_config(arg)`); recipes.py holds what they share."""
