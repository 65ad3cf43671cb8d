"""The day report: ``data`` reads a day from an engine database, ``page`` writes it as one HTML
file, ``charts`` draws its figures (matplotlib, loaded only by the report writer).
"""
