"""Ray actors: thin classes that hold loaded models on one device and call into `pipeline/`."""
