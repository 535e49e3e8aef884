"""Building blocks: rays, samplers, volume rendering, encoders, EAA, GA, refiner, losses, prosody."""
