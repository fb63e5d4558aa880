"""The web console: a login form and one page that drives the REST and WebSocket APIs."""
