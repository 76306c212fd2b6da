"""Running benchmarks: the ``rayfront bench`` commands, the sweep plan and its models."""
