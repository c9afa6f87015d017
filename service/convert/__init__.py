"""What the endpoints share between the wire and the engine: a request's network and samples
bound to the engine's (`binding`), arrays decoded from and encoded to the wire (`encoding`), and
a long computation's progress reports (`progress`)."""
