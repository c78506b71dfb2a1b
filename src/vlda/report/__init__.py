"""Reports from finished runs: paper-style tables (:mod:`vlda.report.tables`)."""
