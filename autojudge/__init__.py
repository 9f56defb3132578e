"""AutoJudge: lossy speculative decoding with a learned judge, as a Ray pipeline.

Stages: mine labels (semi-greedy search) -> train a judge -> decode / evaluate /
batch-infer with the judge -> export the labelled data. See docs/design.md.
"""

__version__ = "0.1.0"
