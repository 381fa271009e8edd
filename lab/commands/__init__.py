"""Command-line front ends. Each module: add_arguments(parser) and run(args) -> int."""
