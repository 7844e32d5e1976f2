"""Stable Diffusion XL (MLPerf stable-diffusion-xl)."""
