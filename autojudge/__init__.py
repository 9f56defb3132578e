"""AutoJudge: lossy speculative decoding with a learned judge, as a Ray pipeline.

Stages: mine labels (semi-greedy search) -> train a judge -> decode / evaluate /
batch-infer with the judge -> export the labelled data. See docs/design.md.

Importing the package registers the model families it ships resolvers for
(`autojudge.model_specs`): `smollm2:` from `autojudge.real`.
"""

import autojudge.real  # noqa: F401 - registers the `smollm2:` specs (light: no torch)

__version__ = "0.1.0"
