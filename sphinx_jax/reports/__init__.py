"""Pages a person looks at: `report.html` of a run (run_page.py), built
from what is on disk, so it can be rebuilt after a killed run. Static,
self-contained HTML: inline CSS, a few lines of plain script to sort the
tables, inline SVG loss curves (chart.py), images by relative links."""
