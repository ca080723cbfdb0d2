"""The lab: looking inside a trained model (inspect, cells, explain) and plotting learning curves."""
