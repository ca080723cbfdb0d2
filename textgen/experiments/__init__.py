"""Experiments on the recurrent cells: each trains small models on tasks of its own and reports how they fare."""
