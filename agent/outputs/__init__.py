"""What receives each finished call: the store, the live feed, metrics, and, later, alerts and exporters."""
