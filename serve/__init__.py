"""smalgo.serve."""
