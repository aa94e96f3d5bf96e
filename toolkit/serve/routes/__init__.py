"""One module per served family: its ServedModel and its HTTP routes."""
