"""The bottom layer."""
