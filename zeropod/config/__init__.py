"""Configuration parsed at the edge into frozen dataclasses (annotations, settings)."""
