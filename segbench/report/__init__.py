"""Reports: terminal summaries now; HTML, Markdown and CSV reports and run comparison build on them."""
