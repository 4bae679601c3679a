"""The embedded default stack for the synthetic world: CLIP, decoder (and their shipped weights)."""
