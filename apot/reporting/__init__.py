"""Results into evidence: the summary, noise, claims and verdicts, figures, the HTML/PDF report, DVC plots."""
