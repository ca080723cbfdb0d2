"""textgen serve: the HTTP API and web page over the continuous-batching loop."""
