"""Quality assessment: cues, verdict, ground-truth metrics, pictures and the HTML report."""
