"""What is built from result JSONs: tables, evidence, significance, figures, baselines, verdicts."""
