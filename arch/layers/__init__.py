"""Blocks shared across families."""
