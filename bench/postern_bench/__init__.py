"""postern benchmark drivers (Python 3 standard library only)."""
