"""Load generators: the closed-loop client, KServe v2 wire helpers, inputs, Locust users."""
