"""Layer 6: what a user runs: generate, animate, evaluate, report, quickstart."""
