"""A report to look at: one offline HTML page with a sortable table and a 3D view of each predicted scan."""

from geot.report.page import render_page, write_report
from geot.report.prediction import GeotBlock, PredictedScan, read_prediction

__all__ = ["GeotBlock", "PredictedScan", "read_prediction", "render_page", "write_report"]
