"""Figure helpers shared by every technique's plot_* function."""
