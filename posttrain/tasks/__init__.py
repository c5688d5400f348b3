"""Tasks: built-in generators of training and evaluation data (seeded synthetic math, its preference pairs,
the NLU task table and loaders) and :mod:`posttrain.tasks.sources`, which turns a recipe's data source (a
file read by :mod:`posttrain.data`, or one of these generators) into validated records.

Sits above :mod:`posttrain.data` (records, readers, templates): data never imports a task."""
