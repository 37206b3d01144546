"""helios_http: the OpenAI-compatible HTTP server and the `helios-engine` command line."""
