"""From records to answers: results tables and ranking, plots, and the HTML report."""
