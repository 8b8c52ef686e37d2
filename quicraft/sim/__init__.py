"""Deterministic simulator for the Raft core."""
