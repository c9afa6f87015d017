"""The endpoints: one module per endpoint, the request layer between the wire and the engine, and
what each request will cost."""
