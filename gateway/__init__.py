"""Cutover: a traffic-splitting reverse proxy and feature-flag gateway."""

__version__ = "0.1.0"
