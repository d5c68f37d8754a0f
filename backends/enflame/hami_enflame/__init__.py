"""hami backend for Enflame GCUs."""
