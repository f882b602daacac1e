"""Sequence models: recurrent networks, Transformers, language-model and seq2seq objectives."""
