"""Rate-distortion benchmarks on the Kodak images (needs ../shared and the `bench` extra)."""
