"""Shared benchmark machinery: timing, peak memory, provenance, result rows and progress."""
