"""Training: the spine (recipe -> data -> model -> Trainer -> run folder), training arguments, machines'
settings, checkpoints and resume, the tokenization cache, loss scaling, distillation's loss (a teacher's
outputs beside the labels) and its teacher-logit cache, length grouping, streams,
`llmkit validate` and `llmkit sweep`.

May import: core, metrics, data, models, tasks, recipe, runs
"""
