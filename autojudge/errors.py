"""User-facing errors: the CLI prints their message and exits with status 2."""


class InputError(ValueError):
    """Bad user input: the message names the file, the line and what was wrong."""


class ModelPairError(ValueError):
    """The target and draft (or a judge and a model pair) cannot be used together."""
