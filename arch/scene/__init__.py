"""Scenes and objects: neural scene representations (NeRF) and Slot Attention."""
