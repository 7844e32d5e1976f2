"""Text-to-image models (MLPerf `text_to_image`)."""
