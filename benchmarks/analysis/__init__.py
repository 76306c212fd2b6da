"""Turning measurements into findings: results files, the knee, goals and the report."""
