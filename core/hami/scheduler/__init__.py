"""The scheduler extender: cluster state from the API, device fitting, scoring, filter/prioritize/bind."""
