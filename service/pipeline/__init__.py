"""The pipeline: a compute request's path from its body's bytes to its answer's bytes.

Scan the bytes (`scan`), parse, estimate the cost (`costs`) and refuse what is over a limit
(`refusal`), run the endpoint its row names (`handlers`), serialise the answer: `dispatch.handle`
does it all, wherever the transport runs it. What each endpoint computes is in
`service.endpoints`, below.
"""
