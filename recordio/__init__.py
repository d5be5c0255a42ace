"""smalgo.recordio."""
