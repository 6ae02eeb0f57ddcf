"""Building and driving a run: its parts assembled, the loop of rounds, the progress display,
the reports. The only stage that imports the others."""
