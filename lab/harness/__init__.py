"""Standard-library-only harness: runs inside the images. Never import docker/tabulate/rich here."""
