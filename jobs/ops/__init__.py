"""For operators: health and readiness checks (health) and Prometheus metrics (metrics)."""
