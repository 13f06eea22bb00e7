"""Pages a person looks at: `report.html` for a run (run_page.py) and for a
comparison of methods (comparison_page.py), built from what is on disk, so
`python -m sphinx_jax.report` rebuilds them after a killed run. Static,
self-contained HTML: inline CSS, a few lines of plain script to sort the
tables, inline SVG loss curves (chart.py), images by relative links."""
