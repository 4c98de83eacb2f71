"""Helpers shared by the test modules (audio decoding, word error rate)."""
