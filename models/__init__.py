"""The models shipped with textgen, installed as ``textgen.pretrained``.

Each folder here is a textgen model directory (``textgen.model_dir``), found by
its name wherever a model directory is taken; RECIPE.md beside its files says
how it was made and the one command that makes it again. Nothing here is code.
"""
