"""MLflow registry: names, reads, writers (SQL transaction or REST) and pyfunc packaging."""
