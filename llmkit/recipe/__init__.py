"""The recipe: loading the YAML, checking every key (each section by the module that owns it), defaults,
``key=value`` overrides, and the generated key reference.

May import: core, metrics, data, models, tasks
"""
