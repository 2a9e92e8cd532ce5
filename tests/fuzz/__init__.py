"""Hostile-input fuzzing: shared hypothesis strategies and the optional atheris harnesses."""
