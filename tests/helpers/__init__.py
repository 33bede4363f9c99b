"""Helpers shared by the tests of several experiments (importable as ``helpers``: tests/conftest.py)."""
