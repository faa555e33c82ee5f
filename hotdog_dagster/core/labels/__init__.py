"""Zero-shot labels: label sets and scoring in one matrix product."""
