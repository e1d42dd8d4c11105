"""Reading a recipe's data: local files (CSV, JSON lines, text, Parquet), hub datasets, streams, splits,
column checks, and token blocks for language modelling.

May import: core, metrics
"""
