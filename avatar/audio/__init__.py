"""Audio at the edge (decode, resample) and the causal audio features the models consume."""
