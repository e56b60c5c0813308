"""What explains a model's failures: the example grid (clean, corrupted, attacked images with predictions)."""
