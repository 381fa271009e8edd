"""Docker-facing orchestration (catalog, images, run, compare). Never imported by the harness."""
