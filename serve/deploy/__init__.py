"""The deploy wing: Ray Serve applications and everything that talks to Ray.

These are the only modules that import ``ray``: the Serve applications (``app``), the
ingress deployment (``gateway``), the model-version deployment (``replica``), the loader
that deploys versions and discovers their endpoints (``ray_loader``, ``kv``), the
autoscaling policy and ``rayfront serve``. Everything they wrap is Ray-free.
"""
