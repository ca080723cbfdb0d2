"""Stage 6, generation: sampling from logits, the one generation loop, and its export as a SavedModel."""
