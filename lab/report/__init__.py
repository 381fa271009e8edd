"""Reports, history and plots. Never imported by the harness."""
