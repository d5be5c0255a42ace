"""smalgo.containers."""
