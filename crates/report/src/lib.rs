//! w2sg-report: plots and the HTML report.
