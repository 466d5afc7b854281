"""kvis report: the sections of one HTML page and the page itself."""
