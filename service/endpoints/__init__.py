"""The endpoints: what each compute endpoint computes, one module each (the request pipeline
around them is `service.pipeline`, what they share between wire and engine `service.convert`)."""
