"""Datapoints as functions: each modality maps a datapoint to (coordinates, features) and back."""
