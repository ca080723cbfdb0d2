"""Stage 3, the model: recurrent cells, the fused LSTM, the stacked network and its one-step form, the loss, traces."""
