"""Data: loading image-caption datasets, transforms, synthetic shapes, and the Lightning datamodule."""
