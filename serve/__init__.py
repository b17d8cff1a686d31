"""The gateway users talk to: one Ray Serve application with REST (/v1) and MCP (/mcp).

    app.py             build_app(args) -> Application   (`serve run serve.app:build_app`)
    encoder.py         text -> vectors: LocalEncoder in each gateway (default) or the Encoder
                       deployment (@serve.batch, one model per replica); NMEM_ENCODE_IN
    gateway.py         Gateway deployment: the FastAPI ingress, built inside each replica
    http_app.py        the FastAPI app: lifespan (cluster + MCP), /healthz, /metrics, dashboard
    rest.py            REST routes;  schemas.py  request/response models with their limits
    mcp_tools.py       the 15 MCP tools (shared by /mcp and the stdio proxy)
    mcp_server.py      /mcp: streamable HTTP, stateless, JSON responses, API-key gate
    service.py         what every call does: encode the text, then call the cluster
    encode_batcher.py  coalesces one replica's concurrent encodes into few forward passes
    auth.py            API keys -> tenants;  error_map.py  errors -> HTTP statuses / MCP errors
    http_middleware.py body-size limit, metrics, the one error envelope
    metrics.py         Prometheus metrics;  settings.py  GatewaySettings (NMEM_*)
    cli.py             `neural-memory serve | mcp | demo`;  local.py  the `serve` command
    stdio_proxy.py     `neural-memory mcp` (its backend is the Python client, `neural_memory`)
    images.py          GET/PUT /v1/memories/{name}/image: memory images (.nmem)
    client/            the Python client, installed and imported as `neural_memory` (see there)

Nothing here is imported by this package's __init__, so `import serve` is free.
"""
