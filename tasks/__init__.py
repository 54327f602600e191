"""Every Prefect @task of the factory, one file per stage (thin wrappers over factory)."""
