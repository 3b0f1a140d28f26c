"""query: the read questions, the SQL sandbox, the client (API or file).

Importing the package registers the questions of its newer modules (incidents, sequence) in
``questions.QUESTIONS``, so that the API, the CLI and the dashboard all answer them.
"""

from eventscope.tracer.query import incidents, sequence

__all__ = ["incidents", "sequence"]
