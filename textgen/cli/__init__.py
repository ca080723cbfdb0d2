"""The ``textgen`` command line: a Click group, one module per family of commands, thin over the library."""
