"""Every on-disk format, each with its writer and reader side by side."""
