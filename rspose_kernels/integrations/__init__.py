"""Adapters to training frameworks. Each submodule is the only place that imports its framework,
and importing it without that framework installed still succeeds (it then registers nothing)."""
