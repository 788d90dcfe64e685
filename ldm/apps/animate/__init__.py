"""Latent walks: path maths, renderers, frames on disk and videos, and the render itself."""
