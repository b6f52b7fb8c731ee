"""Data files shipped with the client (the demo image)."""
