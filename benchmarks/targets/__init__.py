"""What gets measured: the raw runtime, baselines (bare ASGI, plain Ray Serve) and rayfront."""
