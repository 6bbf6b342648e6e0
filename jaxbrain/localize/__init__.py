"""Localization: overlays of tumor masks and heatmaps, Grad-CAM, and prediction on scans."""
