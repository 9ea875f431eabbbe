"""Sources, the course front end, the packed feature store and the split."""
