"""Pure domain: fleet spec, data contract, forecaster, backtest, gate, outcomes, drift math.

Nothing here imports Prefect, Ray or MLflow."""
