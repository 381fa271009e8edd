"""Standard-library-only kernel observers: run inside the images."""
