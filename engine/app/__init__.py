"""The application: the command line, the modes, the supervisor tree's assembly, the operator's
control socket, accounts and the table of configuration sections. The top layer: nothing imports it.
"""
