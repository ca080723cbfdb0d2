"""Stage 1, data: corpus files read as text, the token cache on disk, and training windows over its ids."""
