"""Compression techniques as hooks around the one training loop (see ``base.Technique``)."""
