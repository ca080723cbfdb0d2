"""The long-memory experiment: synthetic tasks that need a memory of D steps, the runs, and their figures."""
