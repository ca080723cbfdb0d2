"""Stage 2, tokenization: the rules of every level, the Hugging Face tokenizer, its file, and its in-graph twin."""
