"""Ready search spaces: each module defines ``SPACE`` (and optionally ``TASK``, ``OBJECTIVE``)."""
