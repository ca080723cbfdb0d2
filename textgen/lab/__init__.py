"""The lab: looking inside a trained model (inspect, explain) and experiments on the recurrent cells."""
