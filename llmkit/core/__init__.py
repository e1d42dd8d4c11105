"""The bottom layer: errors, where shipped files live, devices and precision, progress lines, library
versions.

Everything may import it; it imports no other llmkit package.

May import: nothing
"""
