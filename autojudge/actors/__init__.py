"""Ray actors: thin classes that hold loaded models on one device and compute with `decode/` (the jobs in
`pipeline/` create and drive them; actors never import `pipeline/`)."""
