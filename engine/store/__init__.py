"""The engine database (SQLite in WAL mode): schema and migrations, the rows every store-bound
message becomes, and the typed reads actors rebuild their state from (``database``).
"""
