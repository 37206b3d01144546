"""helios_cli: the `helios-engine` command line, on top of helios_core and (for `serve`) helios_http.

main        the parser and the dispatch to one module per command
options     option types and the option-to-object helpers `generate` and `serve` share
generate    `helios-engine generate`: the sampling flags and a completion streamed to stdout
serve       `helios-engine serve`: the server's flags (helios_http.server runs it)
rpc_worker  `helios-engine rpc-worker`: llama.cpp's RPC server for --rpc clients
"""
