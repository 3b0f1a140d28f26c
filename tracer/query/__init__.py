"""query: the read questions, the SQL sandbox, the client (API or file)."""
