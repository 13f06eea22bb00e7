"""Training the shipped digits prior, and scoring its samples."""
