"""Helpers shared by the test modules: bot processes and their sink, databases, stacks, fault injection."""
